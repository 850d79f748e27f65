"""Weights are read lazily: a .safetensors file's header is checked (keys, shapes, dtypes) before any
tensor's data is read, and then the tensors are read one by one, never the whole file at once."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES

import alexdsl
import alexdsl.weights
from alexdsl.errors import AlexDSLError
from alexdsl.weights import read_weights


def write_header_only(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> int:
    """A .safetensors file whose header declares ``shapes`` and whose data is a hole (a sparse file): its
    full size, without writing the data. Returns the data's size in bytes."""
    width = {"BF16": 2, "F32": 4}[dtype]
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = math.prod(shape) * width
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    with open(path, "wb") as stream:
        stream.write(len(text).to_bytes(8, "little") + text)
        stream.truncate(8 + len(text) + offset)
    return offset


@pytest.fixture
def counted_reads(monkeypatch) -> list[int]:
    """The byte counts of the tensor reads read_weights makes."""
    reads: list[int] = []
    real = alexdsl.weights._read_span

    def counting(stream, offset, count, dtype, shape):
        reads.append(count)
        return real(stream, offset, count, dtype, shape)

    monkeypatch.setattr(alexdsl.weights, "_read_span", counting)
    return reads


def test_the_1b_example_is_checked_from_the_header_alone(tmp_path, counted_reads):
    expected = alexdsl.load(EXAMPLES / "llama.adsl").state_keys()
    assert sum(math.prod(s) for s in expected.values()) == 1_235_814_400
    shapes = dict(expected)
    shapes["model.layers.15.mlp.down_proj.weight"] = (2048, 8191)  # one wrong shape, in the last layer
    del shapes["model.norm.weight"]
    path = tmp_path / "llama-1b.safetensors"
    data_bytes = write_header_only(path, shapes)
    assert data_bytes > 2 * 1024**3  # Llama-3.2-1B's bfloat16 weights: 2.3 GiB, a hole on disk
    tracemalloc.start()
    try:
        with pytest.raises(AlexDSLError, match=r"1 missing, 1 mis-shaped") as error:
            read_weights(path, expected)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "'model.norm.weight'" in str(error.value) and "(2048, 8191)" in str(error.value)
    assert counted_reads == []  # no tensor was read
    assert peak < 4 * 1024**2, peak  # the header and its checks only


def test_tensors_are_read_one_at_a_time(tmp_path, counted_reads):
    pytest.importorskip("safetensors", reason="pip install safetensors (the torch extra) to write the file")
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    arrays = {f"layer{i}.weight": rng.standard_normal((256, 1024), dtype=np.float32) for i in range(8)}  # 8 MiB
    path = tmp_path / "w.safetensors"
    save_file(arrays, str(path))
    total = sum(a.nbytes for a in arrays.values())
    expected = {k: a.shape for k, a in arrays.items() if k != "layer7.weight"}
    tracemalloc.start()
    try:
        read = read_weights(path, expected, optional=["layer7.weight"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert all(np.array_equal(read[k], arrays[k]) for k in expected) and "layer7.weight" not in read
    assert counted_reads == [arrays["layer0.weight"].nbytes] * 7  # only the tensors asked for, each once
    wanted = total * 7 // 8
    assert peak < wanted + 1024**2, (peak, wanted)  # the arrays returned, no copy of the file or of a tensor
