"""Data sources for training and run: synthetic, digits, image folders; Caffe-style preprocessing; errors.

The sources are NumPy and Pillow only; torch appears here as a reference (bilinear resizing)
and in the check that the NumPy executor runs images and data sets in a process without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, ROOT

Image = pytest.importorskip("PIL.Image")

from alexdsl.data import ImageFolder, Preprocess, open_source, resize_bilinear  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402


def test_synthetic_is_deterministic_and_shaped():
    a = open_source("synthetic:40", (3, 5, 7), 4, seed=1)
    b = open_source("synthetic:40", (3, 5, 7), 4, seed=1)
    assert a.length(True) == 40 and a.length(False) == 10
    xa, ya = a.batch([0, 3, 39], 0, True)
    xb, yb = b.batch([0, 3, 39], 0, True)
    assert xa.shape == (3, 3, 5, 7) and xa.dtype == np.float32 and ya.dtype == np.int64
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert int(a.y[True].max()) < 4
    with pytest.raises(AlexDSLError, match="synthetic:N"):
        open_source("synthetic:zero", (3, 5, 7), 4)


def test_synthetic_pixels_go_through_the_networks_preprocessing():
    plain = open_source("synthetic:40", (3, 5, 7), 4, seed=2)
    x = plain.x[True]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0.1  # 0..255 pixels / 255
    centred = open_source("synthetic:40", (3, 5, 7), 4, seed=2, preprocess={"mean": (100, 120, 140), "scale": 0.5})
    mean = np.array([100.0, 120.0, 140.0], dtype=np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(centred.x[True], (x * 255 - mean) * 0.5, rtol=0, atol=1e-3)
    assert "N/4" in plain.validation and "40 and 10" in plain.validation


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_digits_split_and_resize(shape):
    pytest.importorskip("sklearn")
    source = open_source("digits", shape, 10)
    assert source.length(True) + source.length(False) == 1797
    assert source.length(False) == 364
    x, y = source.batch(range(5), 0, True)
    assert tuple(x.shape) == (5, *shape)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 + 1e-6
    assert sorted(set(source.y[False].tolist())) == list(range(10))
    again = open_source("digits", shape, 10)
    assert np.array_equal(again.y[False], source.y[False])


def test_digits_needs_ten_classes():
    pytest.importorskip("sklearn")
    with pytest.raises(AlexDSLError, match="10 classes"):
        open_source("digits", (1, 8, 8), 5)


def test_preprocess_arithmetic():
    x = np.full((1, 3, 2, 2), 200.0, dtype=np.float32)
    np.testing.assert_allclose(Preprocess().normalize(x), x / 255, rtol=1e-6)
    p = Preprocess.from_settings({"mean": [100.0, 150.0, 200.0], "scale": 0.5})
    assert p.normalize(x)[0, :, 0, 0].tolist() == [50.0, 25.0, 0.0]
    p = Preprocess.from_settings({"mean": 100, "std": (50, 100, 25)})
    assert p.normalize(x)[0, :, 0, 0].tolist() == [2.0, 1.0, 4.0]
    with pytest.raises(AlexDSLError, match="2 values"):
        Preprocess.from_settings({"mean": (1, 2)}).normalize(x)


def make_folder(root: Path, classes: dict[str, int], splits=("train", "val"), size=(20, 16)) -> Path:
    for split in splits:
        for i, (name, count) in enumerate(classes.items()):
            directory = root / split / name
            directory.mkdir(parents=True, exist_ok=True)
            for j in range(count):
                color = (40 * i + 10 * j, 100, 200 - 30 * i)
                Image.new("RGB", size, color).save(directory / f"{j}.jpg")
    return root


def test_image_folder_loads_with_caffe_preprocessing(tmp_path):
    root = make_folder(tmp_path / "imgs", {"cat": 3, "dog": 2})
    settings = {"resize": (12, 12), "crop": (8, 8), "mirror": True, "mean": (104.0, 117.0, 123.0)}
    source = open_source(str(root), (3, 8, 8), 4, preprocess=settings, seed=3)
    assert isinstance(source, ImageFolder)
    assert source.class_names == ["cat", "dog"]
    assert source.length(True) == 5 and source.length(False) == 5
    x, y = source.batch([0, 4], 0, True)
    assert x.shape == (2, 3, 8, 8) and y.tolist() == [0, 1]
    again, _ = source.batch([0, 4], 0, True)
    assert np.array_equal(x, again)  # augmentation is a function of (seed, epoch, index)
    val, _ = source.batch([0], 0, False)
    assert abs(float(val[0, 1].mean()) - (100 - 117)) < 2  # mean subtracted, pixels not scaled
    gray = open_source(str(root), (1, 10, 10), 2)
    assert gray.batch([1], 0, False)[0].shape == (1, 1, 10, 10)


def test_image_folder_errors(tmp_path):
    with pytest.raises(AlexDSLError, match="no such folder"):
        open_source(str(make_folder(tmp_path / "a", {"x": 1}, splits=("train",))), (3, 8, 8), 2)
    empty = make_folder(tmp_path / "b", {"x": 1, "y": 1})
    for f in (empty / "train" / "y").iterdir():
        f.unlink()
    with pytest.raises(AlexDSLError, match="empty class"):
        open_source(str(empty), (3, 8, 8), 2)
    with pytest.raises(AlexDSLError, match="3 class folders.*class\\(2\\)"):
        open_source(str(make_folder(tmp_path / "c", {"x": 1, "y": 1, "z": 1})), (3, 8, 8), 2)
    stray = make_folder(tmp_path / "d", {"x": 1})
    (stray / "val" / "q").mkdir()
    Image.new("RGB", (4, 4)).save(stray / "val" / "q" / "0.png")
    with pytest.raises(AlexDSLError, match="not among the training classes"):
        open_source(str(stray), (3, 8, 8), 2)
    corrupt = make_folder(tmp_path / "e", {"x": 2})
    (corrupt / "train" / "x" / "1.jpg").write_bytes(b"not a jpeg")
    source = open_source(str(corrupt), (3, 8, 8), 2)
    with pytest.raises(AlexDSLError, match="1.jpg: cannot decode"):
        source.batch([0, 1], 0, True)
    with pytest.raises(AlexDSLError, match="unknown data source"):
        open_source(str(tmp_path / "nowhere"), (3, 8, 8), 2)


@pytest.mark.parametrize("size", [(3, 3), (20, 20), (28, 28), (5, 13), (2, 1)])
def test_bilinear_resize_matches_torch(size: tuple[int, int]) -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 3, 8, 7), dtype=np.float32) * 255
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resize_bilinear(x, size), expected.numpy(), rtol=1e-5, atol=1e-3)


NO_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.mark.slow  # a fresh interpreter: most of this file's CPU time
def test_the_numpy_executor_runs_images_and_data_without_torch(tmp_path: Path) -> None:
    """``alexdsl run --backend cupy`` on an image, on digits and on synthetic data, with torch unimportable."""
    (tmp_path / "sitecustomize.py").write_text(NO_TORCH)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 200).save(image)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    lenet = str(EXAMPLES / "lenet.adsl")
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "hidden by the test" in probe.stderr
    runs = [[lenet, str(image), "--top", "3"], [lenet, "--data", "synthetic:32"]]
    if subprocess.run([sys.executable, "-c", "import sklearn"], capture_output=True).returncode == 0:
        runs.append([lenet, "--data", "digits", "--batch", "64"])
    for args in runs:
        result = subprocess.run([sys.executable, "-m", "alexdsl.cli", "run", *args, "--backend", "cupy"], env=env,
                                capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "images/s" in result.stdout and "Traceback" not in result.stderr
