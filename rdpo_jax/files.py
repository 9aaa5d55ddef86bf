"""Files the project writes itself: strict JSON, atomic replacement, and one clear error per failed write.

* Strict JSON: ``NaN``/``inf`` are not JSON, so every JSON file the project writes (``summary.json``,
  ``data_report.json``, ``report.json``, checkpoint manifests) holds ``null`` where a value is not finite
  (`strict_json`). The one exception is ``metrics.jsonl``, whose documented format writes non-finite
  metrics as the strings ``"nan"``, ``"inf"``, ``"-inf"``.
* Atomic: on a POSIX directory a file is written to ``<name>.tmp-<pid>`` beside it and renamed over the
  target, so a reader sees the old file or the new one, never a partial one; on an object store one write
  puts one whole object, which is atomic by itself (`rdpo_jax.paths`).
* Errors: an ``OSError`` while writing (read-only file system, disk full, quota, permission) becomes an
  `OutputDirError` naming the path and the cause.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rdpo_jax import paths
from rdpo_jax.errors import OutputDirError

__all__ = ["strict_json", "to_json", "write_json", "write_text", "writing"]

_CAUSES = {errno.EROFS: "the file system is read-only", errno.ENOSPC: "no space left on the device",
           errno.EDQUOT: "the disk quota is exceeded", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted", errno.ENOTDIR: "a parent is not a directory"}


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str = "write") -> Iterator[None]:
    """Turns an ``OSError`` raised inside the block into an `OutputDirError` that names ``path``."""
    try:
        yield
    except OutputDirError:
        raise
    except OSError as e:
        detail = e.strerror or str(e)
        cause = f"{_CAUSES[e.errno]} ({detail})" if e.errno in _CAUSES else detail
        raise OutputDirError(f"cannot {what} {os.fspath(path)}: {cause}; the output directory must be a "
                             "writable directory with free space") from e


def strict_json(x: Any) -> Any:
    """A JSON-safe copy of ``x``: non-finite floats become None, numpy scalars and arrays become Python
    values, tuples become lists, mapping keys become strings."""
    if isinstance(x, Mapping):
        return {str(k): strict_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [strict_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return strict_json(x.tolist())
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def to_json(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as strict JSON text (`strict_json`, then ``allow_nan=False``)."""
    return json.dumps(strict_json(obj), indent=indent, allow_nan=False)


def write_text(path: str | os.PathLike, text: str):
    """Writes ``text`` to ``path`` atomically (see the module docstring); returns the path."""
    if not paths.is_local(path):
        target = paths.as_path(path)
        with writing(path):
            target.write_text(text)
        return target
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with writing(path):
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2):
    """Writes ``obj`` to ``path`` as strict JSON (non-finite numbers as null), atomically."""
    return write_text(path, to_json(obj, indent) + "\n")
