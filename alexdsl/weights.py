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
bool, complex, float8) is an error, except integers for the buffers an op declares integer
(``integers``: torchvision's ``relative_position_index`` is int64), which are read as int64.
Keys ending in ``.num_batches_tracked`` (torch batchnorm bookkeeping) are passed through if
they hold at most one value.

Bounds (the way safetensors, ``torch.load(weights_only=True)`` and Pillow's decompression-bomb
guard work: check the header against what is expected, then read): only regular files are
read; a file larger than ``$ALEXDSL_MAX_WEIGHTS_BYTES`` (default 32 GiB) is refused before it
is read. Then the header alone is checked: each entry's dtype; its declared size against the
bytes that hold it (a safetensors entry's offsets, an ``.npz`` member's stored or deflated size,
a torch tensor's storage, memory-mapped); with the network's keys, every name and shape
(:func:`check_state`); the float32 total against the limit. Only then is data read, and only
the arrays the network uses, so reading never allocates more than the network's parameters.

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

import functools
import json
import math
import os
import stat
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.extras import install_command

FORMATS = (".safetensors", ".npz", ".pt", ".pth")
IGNORED_SUFFIXES = (".num_batches_tracked",)  # torch BatchNorm bookkeeping, unused at inference
CAST_DTYPES = ("float16", "bfloat16", "float64")
DEFAULT_MAX_WEIGHTS_BYTES = 32 * 1024**3
NUMBER_PREFIXES = ("int", "uint", "bool", "complex")  # dtypes that are numbers but not floats
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
@dataclass(frozen=True)
class Stored:
    """One array of a weights file as the file's header describes it; nothing is read until :meth:`read`."""

    shape: tuple[int, ...]
    dtype: str  # NumPy's name (float32, int8, ...), else the format's own (bfloat16, F8_E4M3, float8_e4m3fn)
    read: Callable[[], numpy.ndarray]  # the data, as stored (bfloat16 already widened to float32)

    @property
    def nbytes(self) -> int:
        """float32 bytes it takes once read (what converting it allocates)."""
        return math.prod(self.shape) * 4


def read_weights(path: str | os.PathLike[str], expected: Mapping[str, tuple[int, ...]] | None = None, *,
                 optional: Iterable[str] = (), strict: bool = True, integers: Iterable[str] = ()
                 ) -> dict[str, numpy.ndarray]:
    """The float32 arrays of a ``.safetensors``, ``.npz`` or ``.pt``/``.pth`` file, keyed as stored.

    The file's header is checked first: dtypes, and with ``expected`` (key -> shape) the names and
    shapes (:func:`check_state`, with ``optional`` and ``strict``); only then is data read, and
    only the arrays ``expected`` names, so a file can make alexdsl allocate no more than the
    network's own parameters. The keys in ``integers`` may hold integers, read as int64.
    """
    integers = frozenset(integers)
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
    opener = {".safetensors": _open_safetensors, ".npz": _open_npz}.get(suffix, _open_torch)
    with ExitStack() as files:
        stored = opener(name, files)
        _check_header(stored, name, integers)
        if expected is not None:
            check_state(stored, expected, optional=optional, strict=strict, source=name)
            stored = {k: v for k, v in stored.items() if k in expected or not _checked(k)}
        declared = sum(v.nbytes for v in stored.values())
        if declared > limit:
            raise _error(name, f"the arrays declare {_size(declared)} as float32, over the limit of {_size(limit)}",
                         hint="raise ALEXDSL_MAX_WEIGHTS_BYTES if the file is genuine")
        _warn_cast(stored, name, integers)
        return {k: _read(k, v, name, k in integers and _is_integer(v.dtype)) for k, v in stored.items()}


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable


def _is_integer(name: str) -> bool:
    return name.startswith(("int", "uint"))


def _check_header(stored: Mapping[str, Stored], path: str, integers: frozenset[str] = frozenset()) -> None:
    """One error for every dtype that is not a float alexdsl reads (integers where ``integers`` allows them), and
    every oversized bookkeeping entry."""
    refused = {k: v.dtype for k, v in stored.items()
               if _checked(k) and not _is_float(v.dtype) and not (k in integers and _is_integer(v.dtype))}
    numbers = [f"'{k}' ({dtype})" for k, dtype in refused.items() if dtype.startswith(NUMBER_PREFIXES)]
    unreadable = [f"'{k}' ({dtype})" for k, dtype in refused.items() if not dtype.startswith(NUMBER_PREFIXES)]
    bookkeeping = [f"'{k}' (shape {v.shape})" for k, v in stored.items() if not _checked(k) and math.prod(v.shape) > 1]
    lines = [f"{len(items)} weights {what}: {_listed(items)}" for items, what in (
        (numbers, "are not floating point"),
        (unreadable, "have a type alexdsl cannot read"),
        (bookkeeping, "are batchnorm step counters with more than one value")) if items]
    if lines:
        raise _error(path, "\n  ".join(lines),
                     hint="weights must be float32 (float16, bfloat16 and float64 are converted)")


def _warn_cast(stored: Mapping[str, Stored], path: str, integers: frozenset[str]) -> None:
    cast = [k for k, v in stored.items() if _checked(k) and v.dtype != "float32" and not (
        k in integers and _is_integer(v.dtype))]
    if cast:
        kinds = sorted({stored[k].dtype for k in cast})
        warnings.warn(WeightsWarning(f"{path}: warning: converted {len(cast)} {'/'.join(kinds)} weights to float32: "
                                     f"{_listed(cast)}"), stacklevel=4)


def _read(key: str, stored: Stored, path: str, integer: bool = False) -> numpy.ndarray:
    """The array of ``key``, float32 unless it is bookkeeping (as stored) or ``integer`` (int64); a short or damaged
    entry is an error."""
    try:
        array = stored.read()
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile) as error:
        raise _error(path, f"cannot read '{key}' ({type(error).__name__}: {error})") from None
    if tuple(array.shape) != stored.shape:
        raise _error(path, f"cannot read '{key}': its header says shape {stored.shape}, its data {array.shape}")
    if integer:
        return numpy.asarray(array, dtype=numpy.int64)
    return numpy.asarray(array, dtype=numpy.float32) if _checked(key) else numpy.asarray(array)


# .safetensors: an 8-byte header length, a JSON header, the data (https://github.com/huggingface/safetensors)
SAFETENSORS_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16", "BOOL": "bool",
                      "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32",
                      "I32": "int32", "U64": "uint64", "I64": "int64", "C64": "complex64"}
SAFETENSORS_MAX_HEADER = 100 * 1024**2  # the safetensors library's own bound


def _open_safetensors(path: str, files: ExitStack) -> dict[str, Stored]:
    """The header of a .safetensors file, checked against the file's size before any data is read."""
    stream = files.enter_context(open(path, "rb"))  # noqa: SIM115 - closed by ``files``
    size = os.fstat(stream.fileno()).st_size

    def bad(reason: str) -> AlexDSLError:
        return _error(path, f"not a readable .safetensors file ({reason})",
                      hint="write weights with safetensors.numpy.save_file or safetensors.torch.save_file")

    head = stream.read(8)
    if len(head) < 8:
        raise bad("shorter than its 8-byte header length")
    length = int.from_bytes(head, "little")
    if length > min(SAFETENSORS_MAX_HEADER, size - 8):
        raise bad(f"the header declares {length} bytes; the file has {size - 8} after the length")
    try:
        header = json.loads(stream.read(length))
    except (ValueError, RecursionError) as error:
        raise bad(f"the header is not JSON: {str(error)[:120]}") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    data_start, data_size = 8 + length, size - 8 - length
    stored: dict[str, Stored] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and _is_shape(entry.get("shape"))
                and _is_shape(entry.get("data_offsets")) and len(entry["data_offsets"]) == 2):
            raise bad(f"entry '{key}' needs a dtype, a shape and two data_offsets")
        begin, end = entry["data_offsets"]
        kind, shape = entry["dtype"], tuple(entry["shape"])
        dtype = SAFETENSORS_DTYPES.get(kind, kind)
        width = 2 if dtype == "bfloat16" else numpy.dtype(dtype).itemsize if kind in SAFETENSORS_DTYPES else None
        if not begin <= end <= data_size or (width is not None and end - begin != math.prod(shape) * width):
            raise bad(f"entry '{key}' ({kind}, shape {shape}) has data_offsets [{begin}, {end}] "
                      f"in {data_size} bytes of data")
        stored[key] = Stored(shape, dtype, functools.partial(_read_span, stream, data_start + begin, end - begin,
                                                             dtype, shape))
    return stored


def _read_span(stream: Any, offset: int, count: int, dtype: str, shape: tuple[int, ...]) -> numpy.ndarray:
    stream.seek(offset)
    data = bytearray(count)  # writable, so the array is too
    if stream.readinto(data) != count:
        raise EOFError(f"the file ends inside the entry's {count} bytes")
    if dtype == "bfloat16":  # the top half of a float32
        return (numpy.frombuffer(data, "<u2").astype(numpy.uint32) << 16).view(numpy.float32).reshape(shape)
    return numpy.frombuffer(data, numpy.dtype(dtype).newbyteorder("<")).reshape(shape)


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


# .npz: a zip of .npy files
NPZ_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # numpy.savez and numpy.savez_compressed
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand one byte into more than this: a bigger claim is a lie


def _open_npz(path: str, files: ExitStack) -> dict[str, Stored]:
    """The .npy headers of an .npz; each member's declared size is checked against its compressed size."""
    def bad(reason: str) -> AlexDSLError:
        return _error(path, f"not a readable .npz file ({reason})",
                      hint="write weights with numpy.savez(path, **{'conv1.weight': array, ...})")

    try:
        archive = files.enter_context(zipfile.ZipFile(path))
        stored: dict[str, Stored] = {}
        for member in archive.infolist():
            key = member.filename.removesuffix(".npy")
            if member.compress_type not in NPZ_COMPRESSION:
                raise bad(f"'{member.filename}' is compressed with method {member.compress_type}; "
                          "numpy.savez stores and numpy.savez_compressed deflates")
            with archive.open(member) as stream:
                version = numpy.lib.format.read_magic(stream)
                reader = (numpy.lib.format.read_array_header_1_0 if version == (1, 0)
                          else numpy.lib.format.read_array_header_2_0)
                shape, _, dtype = reader(stream)
                header = stream.tell()
            if dtype.hasobject:
                raise _error(path, f"array '{member.filename}' holds Python objects; weights must be numbers")
            declared = header + math.prod(shape) * dtype.itemsize
            most = member.compress_size * (DEFLATE_MAX_RATIO if member.compress_type == zipfile.ZIP_DEFLATED else 1)
            if member.file_size != declared or declared > most + header:
                raise bad(f"'{member.filename}' declares shape {tuple(shape)} of {dtype.name} ({_size(declared)}), "
                          f"but holds {_size(member.file_size)} in {_size(member.compress_size)}")
            stored[key] = Stored(tuple(shape), dtype.name, functools.partial(_read_member, archive, member))
        return stored
    except AlexDSLError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, RuntimeError, TypeError) as error:
        raise bad(f"{type(error).__name__}: {error}") from None


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> numpy.ndarray:
    with archive.open(member) as stream:
        return numpy.lib.format.read_array(stream, allow_pickle=False)


# .pt/.pth: torch.save's zip, memory-mapped so that no storage is read before its tensor is checked
def _open_torch(path: str, files: ExitStack) -> dict[str, Stored]:
    try:
        import torch
    except ImportError:
        raise _error(path, f"reading a .pt/.pth state_dict needs PyTorch: {install_command('torch')}") from None
    import pickle

    def bad(reason: str) -> AlexDSLError:
        return _error(path, f"not a readable torch state_dict ({reason})",
                      hint="save it with torch.save(model.state_dict(), path)")

    try:
        with zipfile.ZipFile(path) as archive:
            packed = [m.filename for m in archive.infolist() if m.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise bad(f"not a torch.save zip archive: {error}; files saved before PyTorch 1.6 must be saved again") \
            from None
    if packed:
        raise bad(f"compressed entries ({_listed(packed)}), which torch.save never writes")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise bad(first) from None
    if isinstance(loaded, Mapping) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        loaded = next((loaded[k] for k in ("state_dict", "model") if isinstance(loaded.get(k), Mapping)), loaded)
    if not isinstance(loaded, Mapping):
        raise _error(path, f"expected a state_dict (a dict of tensors), found {type(loaded).__name__}")
    bad_entries = [f"'{k}' ({type(v).__name__})" for k, v in loaded.items()
                   if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad_entries:
        raise _error(path, f"expected a state_dict (a dict of tensors); {len(bad_entries)} entries are not: "
                           f"{_listed(bad_entries)}")
    expanded = [f"'{k}' (shape {tuple(v.shape)}, {v.untyped_storage().nbytes()} bytes stored)"
                for k, v in loaded.items() if v.numel() * v.element_size() > v.untyped_storage().nbytes()]
    if expanded:
        raise _error(path, f"{len(expanded)} tensors have more elements than their storage holds (expanded or "
                           f"overlapping views): {_listed(expanded)}", hint="save tensors made .contiguous()")
    return {k: Stored(tuple(v.shape), _dtype_name(v), functools.partial(_torch_to_numpy, v)) for k, v in loaded.items()}


def _torch_to_numpy(tensor: Any) -> numpy.ndarray:
    """A NumPy copy (the tensor maps the file); bfloat16, which NumPy lacks, widened to float32."""
    return (tensor.float() if str(tensor.dtype) == "torch.bfloat16" else tensor).numpy().copy()


def as_arrays(weights: Weights, expected: Mapping[str, tuple[int, ...]] | None = None, *,
              optional: Iterable[str] = (), strict: bool = True, integers: Iterable[str] = ()
              ) -> dict[str, numpy.ndarray]:
    """A weights file (see :func:`read_weights`, which checks it against ``expected`` before
    reading) or a mapping of NumPy/CuPy arrays or tensors -> host arrays.

    Arrays given in memory keep their float dtype (the caller chose it); non-float ones are refused, except
    integers for the keys in ``integers``.
    """
    if isinstance(weights, (str, os.PathLike)):
        return read_weights(weights, expected, optional=optional, strict=strict, integers=integers)
    if not isinstance(weights, Mapping):
        raise _error(None, f"weights must be a path ({', '.join(FORMATS)}) or a dict of arrays, "
                           f"got {type(weights).__name__}")
    check_floats(weights, integers)
    return {k: _to_host(v) for k, v in weights.items()}


def check_floats(weights: Mapping[Any, Any], integers: Iterable[str] = ()) -> None:
    """Refuse (in one error) keys that are not strings and values that are not float arrays or tensors (or integer
    ones, for the keys in ``integers``)."""
    allowed = frozenset(integers)
    refused = [f"'{k}' ({_dtype_name(v)})" for k, v in weights.items()
               if not isinstance(k, str) or (_checked(k) and not _is_float(_dtype_name(v))
                                             and not (k in allowed and _is_integer(_dtype_name(v))))]
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
                 optional: Iterable[str] = (), integers: Iterable[str] = ()) -> dict[str, numpy.ndarray]:
    """Read ``weights`` (:func:`as_arrays`) and check them against ``expected`` (:func:`check_state`)."""
    arrays = as_arrays(weights, expected, optional=optional, integers=integers)
    check_state(arrays, expected, optional=optional,
                source=os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else None)
    return arrays


def load_for_network(weights: Weights, network: Any) -> dict[str, numpy.ndarray]:
    """``weights`` read and checked against ``network.state_keys()`` (what every command loads)."""
    return load_weights(weights, network.state_keys(), integers=integer_state_keys(network))


def integer_state_keys(network: Any) -> list[str]:
    """The state keys of the buffers that the network's ops declare integer (:meth:`OpDef.integer_buffers`)."""
    from alexdsl.ops.registry import lookup

    return [f"{layer.name}.{name}" for layer in network.layers() if (op := lookup(layer.op)) is not None
            for name in op.integer_buffers(layer.attrs)]
