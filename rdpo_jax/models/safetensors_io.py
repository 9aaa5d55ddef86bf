"""Minimal streaming safetensors reader and writer (numpy, bfloat16 included, one tensor at a time).

The safetensors format is an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`` and the raw
little-endian bytes. ``safetensors.safe_open(framework="numpy")`` cannot return bfloat16 tensors, so we
read through a memory map (no full-file copy) and write tensor by tensor (no full-model host copy).
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Sequence

import ml_dtypes
import numpy as np

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsFile:
    """Header of one ``.safetensors`` file; tensors are read on demand with :func:`read_tensor`."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        self.metadata = header.pop("__metadata__", {}) or {}
        self.data_start = 8 + n
        self.entries = header

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        code = self.entries[name]["dtype"]
        if code not in DTYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has dtype {code}, not supported; accepted: {list(DTYPES)}")
        return DTYPES[code]


def read_tensor(file: SafetensorsFile, name: str) -> np.ndarray:
    """Read one tensor into a fresh host array (its own memory; the memory map is closed on return)."""
    entry = file.entries[name]
    begin, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    dtype = file.dtype(name)
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{file.path}: tensor {name!r} byte range does not match shape {shape} {dtype}")
    if end == begin:
        return np.zeros(shape, dtype)
    mm = np.memmap(file.path, dtype=dtype, mode="r", offset=file.data_start + begin, shape=shape)
    out = np.array(mm)
    del mm
    return out


def write_safetensors(
    path: str | os.PathLike,
    entries: Sequence[tuple[str, tuple[int, ...], np.dtype]],
    produce: Callable[[str], np.ndarray],
    metadata: dict[str, str] | None = None,
) -> int:
    """Write a ``.safetensors`` file whose tensors are produced one at a time by ``produce(name)``.

    ``entries`` lists (name, shape, dtype) in file order, so the header is written first; each produced
    array must match its entry. Returns the number of tensor bytes written.
    """
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, shape, dtype in entries:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _NAMES[np.dtype(dtype)], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape, dtype in entries:
            arr = np.ascontiguousarray(produce(name))
            if arr.shape != tuple(shape) or arr.dtype != np.dtype(dtype):
                raise ValueError(f"tensor {name}: produced {arr.shape} {arr.dtype}, expected {shape} {dtype}")
            f.write(arr.tobytes())
            del arr
    return offset
