"""One run per output directory: an exclusive lock held for the run's life.

`RunLock` takes ``<output_dir>/run.lock`` (an ``flock`` through the `filelock` package: the kernel releases
it when its process ends, even by SIGKILL, so a lock is never stuck) and records its holder in
``<output_dir>/run.lock.json``: pid, host, start time, command and a per-run nonce. A second process that
starts into the same directory fails at once with `RunLockedError`, naming the holder's pid and host. A
holder record left behind by a process that died without releasing (on this host: its pid is gone) is
reported as stale and replaced.

Several processes (one run on many hosts): process 0 takes the lock and broadcasts the run's nonce; every
other process checks that ``run.lock.json`` in its ``output_dir`` holds that nonce. This also proves that all
processes see one shared directory, which the checkpoints need. If process 0 cannot take the lock, every
process raises the same error.

On an object store (``gs://``, see `rdpo_jax.paths`) there is no flock: the holder record itself is the lock,
created when absent and read back after a moment to confirm that this run's write won. A record left by a
run that died stays until it is removed, so the error then says to delete ``run.lock.json`` if that run is
gone.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
import uuid
from typing import Any

import filelock

from rdpo_jax import paths
from rdpo_jax.errors import OutputDirError
from rdpo_jax.files import write_json, writing

LOCK_FILE = "run.lock"
HOLDER_FILE = "run.lock.json"

__all__ = ["HOLDER_FILE", "LOCK_FILE", "RunLock", "RunLockedError"]


class RunLockedError(OutputDirError):
    """Another live process holds the output directory's run lock (the message names its pid and host)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process (no holder record)"
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')} "
            f"({holder.get('command')})")


class RunLock:
    """The run lock of ``output_dir`` (see the module docstring). ``acquire`` on every process, ``release``
    at the end (also as a context manager)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.directory = paths.as_path(output_dir)
        self.lock_path = self.directory / LOCK_FILE
        self.holder_path = self.directory / HOLDER_FILE
        self._lock: filelock.BaseFileLock | str | None = None  # "object": the holder record is the lock
        self.nonce: str | None = None
        self.stale: str | None = None  # a note about a stale holder record that was replaced

    def read_holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.holder_path.read_text())
        except (OSError, ValueError):
            return None

    def _holder(self) -> dict[str, Any]:
        self.nonce = uuid.uuid4().hex
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": " ".join(sys.argv), "nonce": self.nonce}

    def _take_object(self) -> None:
        """Process 0 on an object store: the holder record is the lock (see the module docstring)."""
        held = self.read_holder()
        if held is not None:
            raise RunLockedError(
                f"output_dir {self.directory} is in use by another run: {_describe(held)}. Wait for it to "
                f"finish; if that run is gone, delete {self.holder_path} (an object store keeps no process "
                "locks), or give this run another output_dir")
        write_json(self.holder_path, self._holder())
        time.sleep(0.5)  # a run that wrote at the same moment: the last write wins, both read it back
        if (self.read_holder() or {}).get("nonce") != self.nonce:
            raise RunLockedError(f"output_dir {self.directory} was taken by another run starting at the same "
                                 f"time: {_describe(self.read_holder())}")
        self._lock = "object"

    def _take(self) -> None:
        """Process 0: the flock, then the holder record (raises `RunLockedError` when held)."""
        with writing(self.directory, "create the output directory"):
            self.directory.mkdir(parents=True, exist_ok=True)
        if not paths.is_local(self.directory):
            self._take_object()
            return
        lock = filelock.FileLock(str(self.lock_path), timeout=0, thread_local=False)
        with writing(self.lock_path, "create the run lock"):
            try:
                lock.acquire()
            except filelock.Timeout:  # an OSError too: answered before `writing` sees it
                raise RunLockedError(
                    f"output_dir {self.directory} is in use by another run: {_describe(self.read_holder())}. "
                    "Wait for it to finish, or give this run another output_dir") from None
        self._lock = lock
        previous = self.read_holder()
        if previous is not None:
            same_host = previous.get("host") == socket.gethostname()
            gone = same_host and isinstance(previous.get("pid"), int) and not _pid_alive(previous["pid"])
            self.stale = (f"replaced a stale run lock of {_describe(previous)}: "
                          f"{'that process is gone' if gone else 'it ended without releasing the lock'}")
        try:
            write_json(self.holder_path, self._holder())
        except OutputDirError:
            self.release()
            raise

    def acquire(self) -> RunLock:
        """Takes the lock (process 0) or checks it (other processes); every process must call it."""
        import jax

        from rdpo_jax.train.distributed import broadcast_text

        if jax.process_count() == 1:
            self._take()
            return self
        error = None
        if jax.process_index() == 0:
            try:
                self._take()
            except OutputDirError as e:
                error = e
        verdict = broadcast_text(f"error:{error}" if error is not None else f"ok:{self.nonce}")
        assert verdict is not None
        if error is not None:
            raise error
        if verdict.startswith("error:"):
            raise OutputDirError(verdict[len("error:"):])
        nonce = verdict[len("ok:"):]
        if jax.process_index() != 0:
            seen = self.read_holder()
            if not seen or seen.get("nonce") != nonce:
                raise OutputDirError(
                    f"process {jax.process_index()} does not see this run's lock record in {self.holder_path} "
                    f"(found: {_describe(seen)}): every process must write to one shared output_dir")
            self.nonce = nonce
        return self

    def release(self) -> None:
        """Removes the holder record and releases the lock (no-op on processes that did not take it)."""
        if self._lock is None:
            return
        try:
            holder = self.read_holder()
            if holder and holder.get("nonce") == self.nonce:
                self.holder_path.unlink()
        except OSError:
            pass  # the lock itself is what matters; a leftover record is reported as stale next time
        finally:
            if self._lock != "object":
                self._lock.release()
            self._lock = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
