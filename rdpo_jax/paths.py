"""One path abstraction for everything a run writes: `etils.epath`, which orbax uses for the checkpoints, so
``output_dir`` can be a POSIX directory or a bucket (``gs://``, ``s3://``; epath needs its backend for that
scheme: TensorFlow's gfile, or fsspec with gcsfs / s3fs).

The files the project writes itself (config, lock, metrics, reports, manifests, caches, exports) go through
`Path` and the helpers here. What differs between the two kinds of storage:

* POSIX (`is_local`): a file is replaced atomically by writing a temporary file and renaming it; the run
  lock is an ``flock``; ``metrics.jsonl`` is appended to; the free space is checked before a checkpoint.
* An object store: one write puts one whole object, which is atomic by itself; there is no flock (the run
  lock is an object created if absent and read back), no append (``metrics.jsonl`` is rewritten whole at
  each flush), and what only writes local files (the safetensors export, matplotlib, TensorBoard) writes
  into a local temporary directory that `local_copy` uploads afterwards.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from etils import epath

__all__ = ["Path", "as_path", "file_size", "files_under", "is_local", "local_copy", "upload_tree"]

Path = epath.Path
PathLike = str | os.PathLike


def as_path(path: PathLike) -> epath.Path:
    """``path`` as an `epath.Path` (a POSIX path or a URI such as ``gs://bucket/run``)."""
    return epath.Path(path)


def is_local(path: PathLike) -> bool:
    """Whether ``path`` is on the local (POSIX) file system, not a ``scheme://`` object store."""
    return "://" not in os.fspath(path)


def file_size(path: PathLike) -> int:
    """Size in bytes of a file, local or remote."""
    if is_local(path):
        return os.stat(os.fspath(path)).st_size
    return int(as_path(path).stat().length)


def files_under(directory: PathLike) -> list[epath.Path]:
    """Every file below ``directory``, sorted (epath's ``walk``: a recursive glob is not offered on buckets)."""
    root = as_path(directory)
    return sorted(as_path(top) / name for top, _, names in root.walk() for name in names)


def upload_tree(local: PathLike, remote: PathLike) -> None:
    """Copies the files under directory ``local`` to ``remote`` (same relative paths), overwriting."""
    local, remote = as_path(local), as_path(remote)
    for src in files_under(local):
        dst = remote / src.relative_to(local).as_posix()
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.copy(dst, overwrite=True)


@contextlib.contextmanager
def local_copy(path: PathLike) -> Iterator[str]:
    """A local directory to write ``path``'s contents into: ``path`` itself when it is local, else a temporary
    directory uploaded to ``path`` when the block ends without an error."""
    if is_local(path):
        os.makedirs(os.fspath(path), exist_ok=True)
        yield os.fspath(path)
        return
    tmp = tempfile.mkdtemp(prefix="rdpo-upload-")
    try:
        yield tmp
        upload_tree(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
