"""Weights files, read one way and checked once, for every command and backend.

Formats, chosen by the file's suffix:

* ``.safetensors``;
* ``.npz`` (``numpy.savez``; arrays only, no pickles);
* ``.pt`` / ``.pth``: a torch ``state_dict`` saved with ``torch.save`` (read with
  ``torch.load(weights_only=True)``, so no code runs); a dict whose ``"state_dict"`` or
  ``"model"`` entry is the state_dict (a training checkpoint) is accepted too.

Keys are ``<layer>.<param>`` (:meth:`alexdsl.Network.state_keys`).

Values: float32 is used as it is. float16, bfloat16 and float64 arrays read from a file are
converted to float32 with a :class:`WeightsWarning` that names them. Any other dtype (integers,
bool, complex) is an error. Keys ending in ``.num_batches_tracked`` (torch batchnorm
bookkeeping) are passed through unchecked.

Bounds: only regular files are read; a file larger than ``$ALEXDSL_MAX_WEIGHTS_BYTES``
(default 32 GiB) is refused before it is read, and so is a ``.npz`` whose arrays declare
more than that.

Every problem with the keys comes back as ONE error that counts and lists the missing,
unexpected and mis-shaped keys:

>>> import numpy as np
>>> expected = {"c.weight": (4, 3, 3, 3), "c.bias": (4,)}
>>> check_state({"c.weight": np.zeros((4, 3, 1, 1)), "d.bias": np.zeros(4)}, expected, source="w.npz")
Traceback (most recent call last):
...
alexdsl.errors.AlexDSLError: w.npz: error: the weights do not fit the network: 1 missing, 1 unexpected, 1 mis-shaped
  missing (1): 'c.bias' (shape (4,))
  unexpected (1): 'd.bias' (shape (4,))
  mis-shaped (1): 'c.weight' has the wrong shape: expected (4, 3, 3, 3), received (4, 3, 1, 1)
  the keys are <layer>.<param>; `alexdsl shapes FILE` lists the network's layers
"""

from __future__ import annotations

import math
import os
import stat
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.extras import install_command

FORMATS = (".safetensors", ".npz", ".pt", ".pth")
IGNORED_SUFFIXES = (".num_batches_tracked",)  # torch BatchNorm bookkeeping, unused at inference
CAST_DTYPES = ("float16", "bfloat16", "float64")
DEFAULT_MAX_WEIGHTS_BYTES = 32 * 1024**3
LISTED = 10  # keys listed per kind of problem; the rest are counted

Weights = str | os.PathLike[str] | Mapping[str, Any]


class WeightsWarning(UserWarning):
    """Weights were usable only after a conversion (float16/float64 -> float32)."""


def _error(path: str | None, message: str, hint: str | None = None) -> AlexDSLError:
    return AlexDSLError([Diagnostic("error", message, path=path, hint=hint)])


def max_weights_bytes() -> int:
    """The largest weights file read: ``$ALEXDSL_MAX_WEIGHTS_BYTES``, else 32 GiB."""
    text = os.environ.get("ALEXDSL_MAX_WEIGHTS_BYTES")
    if text is None:
        return DEFAULT_MAX_WEIGHTS_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise _error(None, f"ALEXDSL_MAX_WEIGHTS_BYTES={text!r} is not a positive integer")
    return value


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f", and {len(items) - LISTED} more" if len(items) > LISTED else "")


def _dtype_name(value: Any) -> str:
    """``float32`` for NumPy, CuPy and torch arrays alike."""
    return str(getattr(value, "dtype", type(value).__name__)).removeprefix("torch.")


def _is_float(name: str) -> bool:
    return name in ("float32", *CAST_DTYPES)


def _checked(key: str) -> bool:
    return not key.endswith(IGNORED_SUFFIXES)


# reading ---------------------------------------------------------------------------------------------
def read_weights(path: str | os.PathLike[str]) -> dict[str, numpy.ndarray]:
    """The float32 arrays of a ``.safetensors``, ``.npz`` or ``.pt``/``.pth`` file, keyed as stored."""
    name = os.fspath(path)
    suffix = Path(name).suffix.lower()
    if suffix not in FORMATS:
        raise _error(name, f"weights must be a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file",
                     hint="save a state_dict with safetensors, numpy.savez or torch.save")
    try:
        info = os.stat(name)
    except FileNotFoundError:
        raise _error(name, "no such weights file") from None
    except OSError as error:
        raise _error(name, f"cannot read the weights ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _error(name, "cannot read the weights: not a regular file")
    limit = max_weights_bytes()
    if info.st_size > limit:
        raise _error(name, f"the weights file is {_size(info.st_size)}, over the limit of {_size(limit)}",
                     hint="raise ALEXDSL_MAX_WEIGHTS_BYTES if the file is genuine")
    reader = {".safetensors": _read_safetensors, ".npz": _read_npz}.get(suffix, _read_torch)
    return _as_float32(reader(name, limit), name)


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable


def _read_safetensors(path: str, limit: int) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(path))
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise _error(path, f"not a readable .safetensors file ({error})",
                     hint="bfloat16 tensors cannot be read into NumPy: save them as float32") from None


def _read_npz(path: str, limit: int) -> dict[str, Any]:
    """Arrays of an .npz, after checking that each member is a plain .npy whose declared size fits."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = 0
            for member in archive.infolist():
                with archive.open(member) as stream:
                    version = numpy.lib.format.read_magic(stream)
                    reader = (numpy.lib.format.read_array_header_1_0 if version == (1, 0)
                              else numpy.lib.format.read_array_header_2_0)
                    shape, _, dtype = reader(stream)
                if dtype.hasobject:
                    raise _error(path, f"array '{member.filename}' holds Python objects; weights must be numbers")
                declared += math.prod(shape) * dtype.itemsize
                if declared > limit:
                    raise _error(path, f"the arrays declare more than {_size(limit)}",
                                 hint="raise ALEXDSL_MAX_WEIGHTS_BYTES if the file is genuine")
        with numpy.load(path, allow_pickle=False) as data:
            return {key: numpy.asarray(data[key]) for key in data.files}
    except AlexDSLError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, RuntimeError, TypeError) as error:
        raise _error(path, f"not a readable .npz file ({type(error).__name__}: {error})",
                     hint="write weights with numpy.savez(path, **{'conv1.weight': array, ...})") from None


def _read_torch(path: str, limit: int) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise _error(path, f"reading a .pt/.pth state_dict needs PyTorch: {install_command('torch')}") from None
    import pickle

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _error(path, f"not a readable torch state_dict ({first})") from None
    if isinstance(loaded, Mapping) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        loaded = next((loaded[k] for k in ("state_dict", "model") if isinstance(loaded.get(k), Mapping)), loaded)
    if not isinstance(loaded, Mapping):
        raise _error(path, f"expected a state_dict (a dict of tensors), found {type(loaded).__name__}")
    bad = [f"'{k}' ({type(v).__name__})" for k, v in loaded.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise _error(path, f"expected a state_dict (a dict of tensors); {len(bad)} entries are not: {_listed(bad)}")
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in loaded.items()}


def _as_float32(arrays: Mapping[str, Any], path: str) -> dict[str, numpy.ndarray]:
    """float32 arrays; float16/float64 converted with one warning; other dtypes one error."""
    refused = [f"'{k}' ({_dtype_name(v)})" for k, v in arrays.items() if _checked(k) and not _is_float(_dtype_name(v))]
    if refused:
        raise _error(path, f"{len(refused)} weights are not floating point: {_listed(refused)}",
                     hint="weights must be float32 (float16 and float64 are converted)")
    cast = [k for k, v in arrays.items() if _checked(k) and _dtype_name(v) != "float32"]
    if cast:
        kinds = sorted({_dtype_name(arrays[k]) for k in cast})
        warnings.warn(WeightsWarning(f"{path}: warning: converted {len(cast)} {'/'.join(kinds)} weights to float32: "
                                     f"{_listed(cast)}"), stacklevel=3)
    return {k: (numpy.asarray(v, dtype=numpy.float32) if _checked(k) else numpy.asarray(v)) for k, v in arrays.items()}


def as_arrays(weights: Weights) -> dict[str, numpy.ndarray]:
    """A weights file (see :func:`read_weights`) or a mapping of NumPy/CuPy arrays or tensors -> host arrays.

    Arrays given in memory keep their float dtype (the caller chose it); non-float ones are refused.
    """
    if isinstance(weights, (str, os.PathLike)):
        return read_weights(weights)
    if not isinstance(weights, Mapping):
        raise _error(None, f"weights must be a path ({', '.join(FORMATS)}) or a dict of arrays, "
                           f"got {type(weights).__name__}")
    check_floats(weights)
    return {k: _to_host(v) for k, v in weights.items()}


def check_floats(weights: Mapping[Any, Any]) -> None:
    """Refuse (in one error) keys that are not strings and values that are not float arrays or tensors."""
    refused = [f"'{k}' ({_dtype_name(v)})" for k, v in weights.items()
               if not isinstance(k, str) or (_checked(k) and not _is_float(_dtype_name(v)))]
    if refused:
        raise _error(None, f"{len(refused)} weights are not floating-point arrays: {_listed(refused)}")


def _to_host(value: Any) -> numpy.ndarray:
    """A NumPy copy of a NumPy/CuPy array or a torch tensor."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        value = (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
    elif hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):  # cupy.ndarray
        value = value.get()
    return numpy.asarray(value, order="C")


# checking ---------------------------------------------------------------------------------------------
def check_state(given: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], *,
                optional: Iterable[str] = (), strict: bool = True, source: str | None = None) -> None:
    """One error for every key that does not fit: missing, unexpected and mis-shaped, with counts.

    ``optional`` keys may be absent or present; keys ending in ``.num_batches_tracked`` may be
    present. With ``strict=False`` only shapes are checked.
    """
    allowed = set(optional)
    missing = [f"'{k}' (shape {tuple(shape)})" for k, shape in expected.items()
               if k not in given and k not in allowed and _checked(k)] if strict else []
    unexpected = [f"'{k}' (shape {tuple(getattr(v, 'shape', ()))})" for k, v in given.items()
                  if k not in expected and k not in allowed and _checked(k)] if strict else []
    misshaped = [f"'{k}' has the wrong shape: expected {tuple(expected[k])}, received {tuple(v.shape)}"
                 for k, v in given.items() if k in expected and tuple(v.shape) != tuple(expected[k])]
    if not (missing or unexpected or misshaped):
        return
    counts = ", ".join(f"{len(items)} {kind}" for kind, items in
                       (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if items)
    lines = [f"the weights do not fit the network: {counts}"]
    for kind, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            more = f"\n    ... and {len(items) - LISTED} more" if len(items) > LISTED else ""
            lines.append(f"  {kind} ({len(items)}): " + "\n    ".join(items[:LISTED]) + more)
    raise _error(source, "\n".join(lines),
                 hint="the keys are <layer>.<param>; `alexdsl shapes FILE` lists the network's layers")


def load_weights(weights: Weights, expected: Mapping[str, tuple[int, ...]], *,
                 optional: Iterable[str] = ()) -> dict[str, numpy.ndarray]:
    """Read ``weights`` (:func:`as_arrays`) and check them against ``expected`` (:func:`check_state`)."""
    arrays = as_arrays(weights)
    check_state(arrays, expected, optional=optional,
                source=os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else None)
    return arrays


def load_for_network(weights: Weights, network: Any) -> dict[str, numpy.ndarray]:
    """``weights`` read and checked against ``network.state_keys()`` (what every command loads)."""
    return load_weights(weights, network.state_keys())
