"""Data sources for ``alexdsl train`` and ``alexdsl run``: ``synthetic``, ``digits``, an image folder, and text.

Written with NumPy and Pillow only, so the NumPy/CuPy executor runs images and data sets
without torch. Every source yields ``(images, labels)`` batches (float32 NxCxHxW and int64 N
NumPy arrays) for a network with one tensor input and one label input. Sampling is a pure
function of ``(seed, epoch, index)``, so an interrupted run can be resumed exactly:

* ``synthetic`` (or ``synthetic:N`` for N training samples, plus N/4 for validation): class
  prototypes plus noise, drawn as 0..255 pixel images of the network's input shape and put
  through the network's preprocessing like real images (by default to [0, 1]), so that the
  network's own solver settings train on it stably; learnable, cheap, no files.
* ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), split
  deterministically 80/20 (stratified), resized with bilinear interpolation when the
  input is not 8x8, replicated to 3 channels if the input has 3.
* a folder ``DIR`` with ``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/*.jpg`` (also png,
  bmp, ppm, webp): decoded with Pillow; classes are the sorted ``train`` subfolder names.
* ``text:FILE`` for a network whose input is token ids: windows of the file's ids (see
  :class:`TextSource`), encoded by characters or by a tokenizer (:mod:`alexdsl.text`).

Preprocessing (``preprocess data(...)`` in the network file, Caffe's ``transform_param``):
pixels are 0..255; ``resize`` to (h, w); ``crop``: a random crop for training, the centre
crop for validation; ``mirror``: a random horizontal flip for training; then
``(pixel - mean) / std * scale``. With none of mean, std and scale declared, ``scale``
defaults to 1/255 (pixels in [0, 1]). The image is finally resized to the input's HxW if it
still differs. Digits go through the same arithmetic (their 0..16 values mapped to 0..255).
"""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.extras import install_command
from alexdsl.limits import max_image_bytes, max_image_pixels
from alexdsl.settings import PREPROCESS_KEYS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff"}
DataError = AlexDSLError  # kept as a name: every data problem is an AlexDSLError


@dataclass(frozen=True)
class Preprocess:
    """Caffe-style preprocessing of one input (see the module docstring)."""

    resize: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mirror: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> Preprocess:
        settings = dict(settings or {})

        def pair(value: Any) -> tuple[int, int] | None:
            if value is None:
                return None
            if isinstance(value, int | float):
                return (int(value), int(value))
            return (int(value[0]), int(value[1]))

        def floats(value: Any) -> tuple[float, ...] | None:
            if value is None:
                return None
            if isinstance(value, int | float):
                return (float(value),)
            return tuple(float(v) for v in value)

        unknown = set(settings) - set(PREPROCESS_KEYS)
        if unknown:
            raise AlexDSLError(f"unknown preprocess setting(s): {', '.join(sorted(unknown))}")
        return cls(resize=pair(settings.get("resize")), crop=pair(settings.get("crop")),
                   mirror=bool(settings.get("mirror", False)), mean=floats(settings.get("mean")),
                   std=floats(settings.get("std")),
                   scale=None if settings.get("scale") is None else float(settings["scale"]))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / std * scale on an NxCxHxW (or CxHxW) float32 array of 0..255 pixels."""
        channels = x.shape[-3]
        if self.mean is not None:
            x = x - self._per_channel(self.mean, channels, "mean")
        if self.std is not None:
            x = x / self._per_channel(self.std, channels, "std")
        scale = self.scale
        if scale is None and self.mean is None and self.std is None:
            scale = 1.0 / 255.0
        if scale is not None and scale != 1.0:
            x = x * np.float32(scale)
        return x.astype(np.float32, copy=False)

    @staticmethod
    def _per_channel(values: tuple[float, ...], channels: int, what: str) -> np.ndarray:
        if len(values) not in (1, channels):
            raise AlexDSLError(f"preprocess {what} has {len(values)} values but the input has {channels} channels")
        return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


@dataclass
class Split:
    """One split of a source: ``batch(indices, epoch, train)`` -> (float32 NxCxHxW, int64 N)."""

    source: Any
    train: bool

    def __len__(self) -> int:
        return self.source.length(self.train)

    def batch(self, indices: Sequence[int], epoch: int) -> tuple[Any, Any]:
        return self.source.batch(indices, epoch, self.train)


class TensorSource:
    """Data held in memory as arrays (synthetic and digits).

    ``validation`` says how the validation split was made (``alexdsl run --data`` prints it).
    """

    name = "tensors"

    def __init__(self, train_x: Any, train_y: Any, val_x: Any, val_y: Any, classes: int, validation: str = ""):
        self.x = {True: train_x, False: val_x}
        self.y = {True: train_y, False: val_y}
        self.classes = classes
        self.validation = validation

    def length(self, train: bool) -> int:
        return int(self.y[train].shape[0])

    def batch(self, indices: Sequence[int], epoch: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
        index = np.asarray(list(indices), dtype=np.int64)
        return self.x[train][index], self.y[train][index]


def _input_spec(input_shape: tuple[int, ...], classes: int) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise AlexDSLError(f"the data sources feed CxHxW images; this network's input is {input_shape}")
    if classes < 1:
        raise AlexDSLError("the network's label input declares no class count")
    return input_shape  # type: ignore[return-value]


SYNTHETIC_NOISE = 0.4  # std of the noise added to each prototype pixel, on the [0, 1] pixel scale


def synthetic(input_shape: tuple[int, ...], classes: int, *, train_size: int = 512, val_size: int = 128,
              seed: int = 0, preprocess: Preprocess | None = None) -> TensorSource:
    """Class prototypes plus noise, as pixels through ``preprocess``: a learnable problem made from ``seed``.

    Each class has a uniformly random prototype image; a sample is its class's prototype plus
    Gaussian noise, clipped to the pixel range 0..255 and then normalised like a real image
    (``preprocess``; by default scaled to [0, 1]). Data on the scale of real inputs is what
    the network's fillers and solver settings were chosen for: unscaled Gaussian data made
    LeNet diverge at its own learning rate.
    """
    rng = np.random.default_rng(int(seed) + 7919)
    prototypes = rng.random((classes, *input_shape), dtype=np.float32)
    pre = preprocess or Preprocess()

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, n, dtype=np.int64)
        noise = rng.standard_normal((n, *input_shape), dtype=np.float32)
        images = np.clip(prototypes[labels] + np.float32(SYNTHETIC_NOISE) * noise, 0.0, 1.0) * np.float32(255.0)
        images = pre.normalize(images) if len(input_shape) == 3 else images / np.float32(255.0)
        return np.ascontiguousarray(images, dtype=np.float32), labels

    tx, ty = make(train_size)
    vx, vy = make(val_size)
    validation = (f"the validation split: synthetic:N draws N training samples and N/4 others for validation, "
                  f"here {train_size} and {val_size}")
    source = TensorSource(tx, ty, vx, vy, classes, validation)
    source.name = "synthetic"
    return source


def digits(input_shape: tuple[int, ...], classes: int, preprocess: Preprocess | None = None) -> TensorSource:
    """scikit-learn's 8x8 digits, 80/20 stratified split (fixed), resized to the input's HxW."""
    channels, height, width = _input_spec(input_shape, classes)
    if classes < 10:
        raise AlexDSLError(f"the digits data has 10 classes but the network's label declares class({classes})")
    if channels not in (1, 3):
        raise AlexDSLError(f"digits are grayscale: the input needs 1 or 3 channels, not {channels}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AlexDSLError(f"--data digits needs scikit-learn: {install_command('digits')}") from None
    bunch = load_digits()
    images = (bunch.images.astype(np.float32) * np.float32(255.0 / 16.0))[:, None]
    labels = bunch.target.astype(np.int64)
    # A fixed stratified split: every 5th sample of each class goes to validation.
    val_mask = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        where = np.flatnonzero(bunch.target == c)
        val_mask[where[::5]] = True
    if (height, width) != (8, 8):
        # MNIST's layout when the input is large enough: the digit fills the central 20/28, zero margin.
        inner = (height, width) if min(height, width) < 16 else (round(height * 20 / 28), round(width * 20 / 28))
        images = resize_bilinear(images, inner)
        top, left = (height - inner[0]) // 2, (width - inner[1]) // 2
        images = np.pad(images, ((0, 0), (0, 0), (top, height - inner[0] - top), (left, width - inner[1] - left)))
    if channels == 3:
        images = np.repeat(images, 3, axis=1)
    images = np.ascontiguousarray((preprocess or Preprocess()).normalize(images), dtype=np.float32)
    val = val_mask
    validation = (f"the validation split: every 5th image of each class, {int(val.sum())} of {len(labels)}; "
                  f"training uses the other {int((~val).sum())}")
    source = TensorSource(images[~val], labels[~val], images[val], labels[val], classes, validation)
    source.name = "digits"
    return source


def resize_bilinear(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of NxCxHxW images to ``size``, as ``torch.nn.functional.interpolate`` does
    (``mode="bilinear"``, ``align_corners=False``, no antialiasing).

    >>> resize_bilinear(np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2), (3, 3))[0, 0].round(3).tolist()
    [[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]]
    """

    def taps(out: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.maximum((np.arange(out, dtype=np.float64) + 0.5) * (size / out) - 0.5, 0.0)
        low = np.minimum(source.astype(np.int64), size - 1)
        return low, np.minimum(low + 1, size - 1), (source - low).astype(np.float32)

    y0, y1, fy = taps(size[0], images.shape[2])
    x0, x1, fx = taps(size[1], images.shape[3])
    rows = images[:, :, y0, :] * (1 - fy)[:, None] + images[:, :, y1, :] * fy[:, None]
    return (rows[:, :, :, x0] * (1 - fx) + rows[:, :, :, x1] * fx).astype(np.float32)


def _image_error(path: str | Path, message: str,
                 hint: str = "set ALEXDSL_MAX_IMAGE_PIXELS to allow larger images") -> AlexDSLError:
    return AlexDSLError([Diagnostic("error", message, path=str(path), hint=hint)])


def _stdin_image() -> io.BytesIO:
    """Standard input's bytes, refused past ``$ALEXDSL_MAX_IMAGE_BYTES``."""
    most = max_image_bytes()
    data = sys.stdin.buffer.read(most + 1)
    if len(data) > most:
        raise _image_error("-", f"standard input holds more than {most:,} bytes, the limit for an image",
                           "set ALEXDSL_MAX_IMAGE_BYTES to allow larger images")
    return io.BytesIO(data)


def load_image(path: str | Path, shape: tuple[int, int, int], preprocess: Preprocess, *, train: bool = False,
               rng: Any = None) -> np.ndarray:
    """Decode one image with Pillow and preprocess it as Caffe does: a CxHxW float32 array.

    ``path`` ``-`` reads standard input. Training draws a random crop and mirror from ``rng``;
    evaluation takes the centre crop. An image declaring more than ``$ALEXDSL_MAX_IMAGE_PIXELS``
    (:func:`alexdsl.limits.max_image_pixels`) is refused from its header, before it is decoded.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise AlexDSLError("reading images needs Pillow: pip install pillow") from None

    channels, height, width = shape
    most = max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with the limit named
            image = Image.open(_stdin_image() if str(path) == "-" else path)
        with image:
            if image.width * image.height > most:
                raise _image_error(path, f"the image declares {image.width}x{image.height} pixels, more than the "
                                         f"limit of {most:,}; refused before decoding (a decompression bomb?)")
            image = image.convert("RGB" if channels == 3 else "L")
            image.load()
    except FileNotFoundError:
        raise AlexDSLError(f"{path}: no such image") from None
    except Image.DecompressionBombError as error:
        raise _image_error(path, f"the image declares more pixels than Pillow opens, more than the limit of "
                                 f"{most:,}; refused before decoding (Pillow: {error})") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise AlexDSLError(f"{path}: cannot decode the image ({error})") from None
    p = preprocess
    if p.resize is not None:
        image = image.resize((p.resize[1], p.resize[0]), Image.BILINEAR)
    if p.crop is not None:
        ch, cw = p.crop
        if image.height < ch or image.width < cw:
            image = image.resize((max(cw, image.width), max(ch, image.height)), Image.BILINEAR)
        if train:
            top, left = rng.randint(0, image.height - ch), rng.randint(0, image.width - cw)
        else:
            top, left = (image.height - ch) // 2, (image.width - cw) // 2
        image = image.crop((left, top, left + cw, top + ch))
    if train and p.mirror and rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if (image.height, image.width) != (height, width):
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(p.normalize(array))


class ImageFolder:
    """``DIR/train/<class>/*`` and ``DIR/val/<class>/*`` decoded with Pillow."""

    name = "folder"

    def __init__(self, root: str | Path, input_shape: tuple[int, ...], classes: int,
                 preprocess: Preprocess | None = None, seed: int = 0):
        self.root = Path(root)
        self.channels, self.height, self.width = _input_spec(input_shape, classes)
        if self.channels not in (1, 3):
            raise AlexDSLError(f"image folders feed 1- or 3-channel inputs, not {self.channels}")
        self.preprocess = preprocess or Preprocess()
        self.seed = int(seed)
        self.workers = min(8, os.cpu_count() or 1)
        self._executor: Any = None
        train_dir, val_dir = self.root / "train", self.root / "val"
        for directory in (train_dir, val_dir):
            if not directory.is_dir():
                raise AlexDSLError(f"{directory}: no such folder; an image folder needs "
                                   f"{self.root}/train/<class>/ and {self.root}/val/<class>/")
        self.class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        if not self.class_names:
            raise AlexDSLError(f"{train_dir}: no class folders")
        if len(self.class_names) > classes:
            raise AlexDSLError(f"{train_dir}: {len(self.class_names)} class folders but the network's "
                               f"label declares class({classes}); label {classes} and up would be out of range")
        self.items = {True: self._scan(train_dir), False: self._scan(val_dir)}
        self.classes = classes
        self.validation = f"the validation split: the images under {val_dir}"

    def _scan(self, directory: Path) -> list[tuple[Path, int]]:
        index = {name: i for i, name in enumerate(self.class_names)}
        items: list[tuple[Path, int]] = []
        for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
            if sub.name not in index:
                raise AlexDSLError(f"{sub}: class '{sub.name}' is not among the training classes "
                                   f"({', '.join(self.class_names)})")
            files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise AlexDSLError(f"{sub}: empty class folder (no {'/'.join(sorted(IMAGE_SUFFIXES))} files)")
            items += [(f, index[sub.name]) for f in files]
        if directory.name == "train":
            missing = [name for name in self.class_names if not any(label == index[name] for _, label in items)]
            if missing:
                raise AlexDSLError(f"{directory}: empty class folder(s): {', '.join(missing)}")
        if not items:
            raise AlexDSLError(f"{directory}: no images")
        return items

    def length(self, train: bool) -> int:
        return len(self.items[train])

    def _pool(self) -> Any:
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="alexdsl-decode")
        return self._executor

    def load(self, index: int, epoch: int, train: bool) -> np.ndarray:
        """One preprocessed CxHxW float32 array; augmentation drawn from (seed, epoch, index)."""
        import random

        path, _ = self.items[train][index]
        rng = random.Random(hash((self.seed, epoch, index, train)) & 0xFFFFFFFF)
        return load_image(path, (self.channels, self.height, self.width), self.preprocess, train=train, rng=rng)

    def batch(self, indices: Sequence[int], epoch: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
        indices = list(indices)
        if len(indices) > 1 and self.workers > 1:  # Pillow releases the GIL while decoding and resizing
            images = np.stack(list(self._pool().map(lambda i: self.load(i, epoch, train), indices)))
        else:
            images = np.stack([self.load(i, epoch, train) for i in indices])
        labels = np.asarray([self.items[train][i][1] for i in indices], dtype=np.int64)
        return images, labels


VALIDATION_FRACTION = 0.1  # the last tenth of a text is its validation split


class TextSource:
    """Windows of ``length`` token ids cut from a text: the first 90% trains, the last 10% validates.

    Training windows do not overlap; each epoch shifts them all by an offset drawn from
    ``(seed, epoch)``, so the model sees every position at every place of the window over the
    epochs. Validation windows are fixed. A batch is ``(ids, ids)``, both int64 NxL: a language
    model's loss (``next_token_loss``) compares each position's scores with the next id.
    """

    name = "text"

    def __init__(self, path: str | Path, length: int, vocab: int, tokenizer_file: str | None = None, seed: int = 0):
        from alexdsl.text import CharTokenizer, open_tokenizer

        self.path, self.window, self.seed = Path(path), int(length), int(seed)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AlexDSLError(f"--data text:{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise AlexDSLError(f"--data text:{path}: cannot read it as UTF-8 text ({error})") from None
        self.tokenizer = open_tokenizer(tokenizer_file) if tokenizer_file else CharTokenizer.from_text(text)
        if self.tokenizer.vocab_size > vocab:
            kind = "tokenizer" if tokenizer_file else "text's character vocabulary"
            raise AlexDSLError(f"--data text:{path}: the {kind} has {self.tokenizer.vocab_size} tokens but the "
                               f"network's embedding takes {vocab}; declare a larger vocabulary")
        ids = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
        cut = int(len(ids) * (1 - VALIDATION_FRACTION))
        self.ids = {True: ids[:cut], False: ids[cut:]}
        self.tokens = len(ids)
        if self.length(True) < 1 or self.length(False) < 1:
            raise AlexDSLError(f"--data text:{path}: its {len(ids):,} tokens are too few: the training split "
                               f"({cut:,}) needs at least two windows of {length} and the validation split "
                               f"({len(ids) - cut:,}) one")
        self.validation = (f"the validation split: the last {VALIDATION_FRACTION:.0%} of the text, "
                           f"{len(ids) - cut:,} of {len(ids):,} tokens")

    def length(self, train: bool) -> int:
        """Windows per epoch; a training window may start up to one window late (the epoch's offset)."""
        return len(self.ids[train]) // self.window - (1 if train else 0)

    def batch(self, indices: Sequence[int], epoch: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
        offset = int(np.random.default_rng((self.seed, epoch)).integers(self.window)) if train else 0
        starts = np.asarray(list(indices), dtype=np.int64) * self.window + offset
        windows = self.ids[train][starts[:, None] + np.arange(self.window)]
        return windows, windows


def open_source(spec: str, input_shape: tuple[int, ...], classes: int, *,
                preprocess: dict[str, Any] | None = None, seed: int = 0, vocab: int | None = None,
                tokenizer: str | None = None) -> Any:
    """A data source from its name: ``synthetic[:N]``, ``digits``, a folder path, or ``text:FILE`` for an
    input of token ids (``tokens(N, vocab=V)``: pass ``vocab``), encoded with ``tokenizer`` if given."""
    if vocab is not None or spec.startswith("text:"):
        if vocab is None:
            raise AlexDSLError(f"--data {spec}: text trains a network whose input is token ids (tokens(N)); "
                               f"this one's input is {'x'.join(map(str, input_shape))}")
        if not spec.startswith("text:") or not spec[5:]:
            raise AlexDSLError(f"--data {spec}: a network whose input is token ids trains on text: "
                               f"--data text:FILE")
        return TextSource(spec[5:], input_shape[0], vocab, tokenizer, seed)
    if tokenizer is not None:
        raise AlexDSLError("--tokenizer encodes text: it goes with --data text:FILE")
    pre = Preprocess.from_settings(preprocess)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        _input_spec(input_shape, classes) if len(input_shape) == 3 else None
        size = 512
        if ":" in spec:
            try:
                size = int(spec.split(":", 1)[1])
                if size < 1:
                    raise ValueError
            except ValueError:
                raise AlexDSLError(f"--data {spec}: expected synthetic:N with N >= 1 training samples") from None
        if classes < 1:
            raise AlexDSLError("the network's label input declares no class count")
        return synthetic(input_shape, classes, train_size=size, val_size=max(1, math.ceil(size / 4)), seed=seed,
                         preprocess=pre)
    if spec == "digits":
        return digits(input_shape, classes, pre)
    if Path(spec).is_dir():
        return ImageFolder(spec, input_shape, classes, pre, seed=seed)
    raise AlexDSLError(f"unknown data source '{spec}': expected synthetic, synthetic:N, digits, or a folder with "
                       "train/<class>/ and val/<class>/ subfolders")
