"""Checkpoints: orbax ``CheckpointManager`` (async, every N steps, keep K) plus an integrity manifest.

A checkpoint of step ``s`` is the directory ``<directory>/<s>/`` holding two orbax items:

- ``state/``: the :class:`~rdpo_jax.train.step.TrainState` (step, params, optimiser state) as one nested
  dict of arrays, keyed by the tree paths (``params/embed_tokens/value``, ``opt_state/0/mu/...``), so any
  pytree (``nnx.State`` with its Variables, optax NamedTuples) round-trips bit-exactly: the tree structure
  comes back from the restore target, the arrays from the checkpoint;
- ``extras/``: a JSON dict (data iterator state, RNG key data via :func:`key_to_json`, config, metrics);

and ``rdpo_manifest.json`` (written by process 0 once the save is committed): every file's relative path,
size and sha256 (``hash_files=False``: sizes only). Orbax never exposes an unfinished save but keeps no
checksums, so :meth:`Checkpointer.restore` verifies the manifest before reading; a step whose manifest is
missing (crash between commit and manifest) or does not match (missing or truncated file) is skipped with
a warning, as is one whose orbax restore fails, and the next older step is tried.

Restoring onto another mesh: the restore target's shardings (``jax.ShapeDtypeStruct(..., sharding=...)``,
see :func:`abstract_state`) decide the placement; orbax reads each shard where it is needed.

Multi-process: every process calls :meth:`~Checkpointer.save` and :meth:`~Checkpointer.restore` with the
same arguments (orbax coordinates the writes); only process 0 writes and verifies manifests, and the verdict
is broadcast so all processes restore the same step. The directory is a shared POSIX directory or an object
store (``gs://``): orbax writes the arrays through tensorstore, the manifests go through `rdpo_jax.paths`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rdpo_jax import paths
from rdpo_jax.errors import OutputDirError, RdpoError
from rdpo_jax.files import write_text
from rdpo_jax.train.distributed import broadcast_text
from rdpo_jax.train.step import TrainState

MANIFEST = "rdpo_manifest.json"
MANIFEST_VERSION = 1
STATE_ITEM = "state"
EXTRAS_ITEM = "extras"

__all__ = ["MANIFEST", "CheckpointError", "Checkpointer", "abstract_state", "key_from_json", "key_to_json",
           "nonfinite_leaves", "verify_manifest", "write_manifest"]


class CheckpointError(RdpoError, RuntimeError):
    """No checkpoint could be restored although some exist (the message lists each step and why)."""


# ----------------------------------------------------------------------------------------------- pytrees


def _key_str(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _paths(tree) -> tuple[list[tuple[str, ...]], list[Any], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [tuple(_key_str(k) for k in path) for path, _ in flat], [leaf for _, leaf in flat], treedef


def _to_nested(tree) -> dict:
    """The leaves of ``tree`` in a nested dict keyed by their path strings."""
    out: dict = {}
    for keys, leaf in zip(*_paths(tree)[:2], strict=True):
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = leaf
    return out


def _from_nested(nested: Mapping, like) -> Any:
    """Inverse of `_to_nested`: the structure of ``like`` filled with the leaves of ``nested``."""
    paths, _, treedef = _paths(like)
    leaves = []
    for keys in paths:
        node = nested
        for k in keys:
            if not isinstance(node, Mapping) or k not in node:
                raise KeyError(f"checkpoint has no array at {'/'.join(keys)}")
            node = node[k]
        leaves.append(node)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def abstract_state(state_or_shapes, shardings=None):
    """The tree of ``state_or_shapes`` with every array leaf replaced by ``jax.ShapeDtypeStruct(shape, dtype,
    sharding=...)``: a restore target.

    Args:
      state_or_shapes: a TrainState of arrays, of ShapeDtypeStructs (e.g. from ``jax.eval_shape``), or a mix.
      shardings: a tree of the same structure with ``NamedSharding`` leaves (e.g. ``state_shardings(params,
        tx, mesh)`` for the live mesh); None keeps each leaf's own ``.sharding``.
    """
    paths, leaves, treedef = _paths(state_or_shapes)
    if shardings is None:
        shards = [getattr(x, "sharding", None) for x in leaves]
    else:
        # matched by path (the longest prefix that has a sharding), not by tree.map: a sharding tree may hold
        # a NamedSharding where the state holds an nnx.Variable, or Variables with other metadata
        s_flat = jax.tree_util.tree_flatten_with_path(
            shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0]
        s_by_path = {tuple(_key_str(k) for k in path): s for path, s in s_flat}
        shards = []
        for p in paths:
            prefix = next((p[:k] for k in range(len(p), -1, -1) if p[:k] in s_by_path), None)
            if prefix is None:
                raise ValueError(f"shardings do not match the state: no sharding for {'/'.join(p)}")
            shards.append(s_by_path[prefix])
    return jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
                                                  for x, s in zip(leaves, shards, strict=True)])


def key_to_json(key: jax.Array) -> dict[str, Any]:
    """A JAX PRNG key (typed ``jax.random.key`` or raw uint32 ``PRNGKey``) as a JSON-able dict."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return {"impl": str(jax.random.key_impl(key)), "typed": True,
                "data": np.asarray(jax.random.key_data(key)).tolist()}
    return {"impl": None, "typed": False, "data": np.asarray(key).tolist(), "dtype": str(key.dtype)}


def key_from_json(d: Mapping[str, Any]) -> jax.Array:
    """Inverse of :func:`key_to_json` (``jax.random.wrap_key_data`` for typed keys): the identical key."""
    if d["typed"]:
        return jax.random.wrap_key_data(jnp.asarray(np.asarray(d["data"], np.uint32)), impl=d["impl"])
    return jnp.asarray(np.asarray(d["data"], d.get("dtype", "uint32")))


@jax.jit
def _finite_flags(leaves):
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def nonfinite_leaves(tree) -> list[str]:
    """Paths of the floating leaves of ``tree`` holding a NaN or Inf (one jitted reduction on device; only
    one bool per leaf comes to the host)."""
    paths, leaves, _ = _paths(tree)
    idx = [i for i, x in enumerate(leaves) if jnp.issubdtype(x.dtype, jnp.inexact)]
    if not idx:
        return []
    flags = np.asarray(_finite_flags([leaves[i] for i in idx]))
    return ["/".join(paths[i]) for i, ok in zip(idx, flags, strict=True) if not ok]


# ---------------------------------------------------------------------------------------------- manifest


def _digest(path, chunk: int = 1 << 23) -> str:
    h = hashlib.sha256()
    with paths.as_path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(step_dir: str | os.PathLike, hash_files: bool = True) -> dict:
    """Writes ``<step_dir>/rdpo_manifest.json`` (atomically): relative path, size and (``hash_files``) sha256
    of every file under ``step_dir``. Returns the manifest."""
    step_dir = paths.as_path(step_dir)
    files = {}
    for p in paths.files_under(step_dir):
        if p.name != MANIFEST and not p.name.startswith(MANIFEST + "."):
            entry: dict[str, Any] = {"size": paths.file_size(p)}
            if hash_files:
                entry["sha256"] = _digest(p)
            files[p.relative_to(step_dir).as_posix()] = entry
    manifest = {"version": MANIFEST_VERSION, "files": files}
    write_text(step_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False))
    return manifest


def verify_manifest(step_dir: str | os.PathLike) -> str | None:
    """None when every file the manifest lists exists with its size (and sha256); else the reason."""
    step_dir = paths.as_path(step_dir)
    try:
        manifest = json.loads((step_dir / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (the save did not finish, or crashed before its manifest was written)"
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable {MANIFEST}: {e}"
    if not files:
        return f"{MANIFEST} lists no files"
    for rel, entry in files.items():
        p = step_dir / rel
        if not p.is_file():
            return f"file {rel} is missing"
        size = paths.file_size(p)
        if size != entry["size"]:
            return f"file {rel} has {size} bytes, the manifest says {entry['size']} (truncated or altered)"
        if "sha256" in entry and _digest(p) != entry["sha256"]:
            return f"file {rel} does not match its sha256 in the manifest (corrupted)"
    return None


def _all_agree(ok: bool) -> bool:
    """True only when ``ok`` holds on every process (one collective; no-op with a single process)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


# -------------------------------------------------------------------------------------------- checkpointer


class Checkpointer:
    """Saves and restores TrainState + JSON extras every ``every`` steps, keeping the newest ``keep``.

    Args:
      directory: the run's checkpoint directory (created); step ``s`` lives in ``<directory>/<s>/``.
      every: :meth:`save` writes only when ``step % every == 0`` (or ``force=True``).
      keep: how many of the newest checkpoints to keep (None: all). Keep at least 2 so that a checkpoint
        that turns out bad still has a predecessor.
      async_save: write in the background (device arrays are copied to host first, then training goes on);
        the manifest follows when the write is committed.
      hash_files: sha256 of every file in the manifest (else sizes only: catches missing and truncated files,
        not bit flips; for very large checkpoints).
    """

    def __init__(self, directory: str | os.PathLike, *, every: int = 100, keep: int | None = 3,
                 async_save: bool = True, hash_files: bool = True):
        if every < 1:
            raise ValueError(f"every={every}; accepted: a positive number of steps")
        if keep is not None and keep < 1:
            raise ValueError(f"keep={keep}; accepted: a positive number of checkpoints, or None for all")
        self.directory = paths.as_path(directory)
        if paths.is_local(self.directory):
            self.directory = self.directory.absolute()
        self.every, self.keep, self.async_save, self.hash_files = every, keep, async_save, hash_files
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=1, create=True,
                                               enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE_ITEM, EXTRAS_ITEM))
        self._pending: list[int] = []
        self._watcher: tuple[threading.Thread, threading.Event] | None = None
        self._bad_steps: set[int] = set()

    # ---------------------------------------------------------------------------------------- writing

    def step_dir(self, step: int):
        return self.directory / str(step)

    def should_save(self, step: int, force: bool = False) -> bool:
        return force or step % self.every == 0

    def save(self, step: int, state: TrainState, extras: Mapping[str, Any] | None = None, *,
             force: bool = False) -> bool:
        """Saves ``state`` and the JSON-able ``extras`` as step ``step`` when ``step % every == 0`` or
        ``force``; returns whether a save was started.

        Raises ValueError naming the step (and the offending leaves) when a floating leaf of ``state`` holds
        a NaN or Inf, before anything is written; ValueError when ``extras`` is not JSON-able. A step that
        already exists is not overwritten (False), unless :meth:`restore` found it bad.
        """
        if not self.should_save(step, force):
            return False
        bad = nonfinite_leaves(state)
        if bad:
            raise ValueError(f"refusing to checkpoint step {step}: non-finite values (NaN/Inf) in "
                             f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; nothing was written")
        extras = dict(extras or {})
        try:
            json.dumps(extras, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint extras of step {step} are not JSON-able: {e}") from e
        self._flush()
        if step in self._manager.all_steps():
            if step not in self._bad_steps:
                return False
            warnings.warn(f"checkpoint step {step} was found bad on restore; replacing it", stacklevel=2)
            self._manager.delete(step)
        self._bad_steps.discard(step)
        self._check_space(step, state)
        args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(_to_nested(state)),
                                     EXTRAS_ITEM: ocp.args.JsonSave(extras)})
        try:
            self._manager.save(step, args=args, force=True)
        except Exception as e:
            raise self._storage_error(e, step) from e
        self._pending.append(step)
        if self.async_save:
            self._start_watcher(step)
        else:
            self._flush()
        return True

    def _check_space(self, step: int, state: TrainState) -> None:
        """Refuses to start a save that cannot fit: the state's bytes (plus 5% and 1 MiB of metadata) against
        the free space of the checkpoint directory (process 0 decides for all)."""
        need = int(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state)) * 1.05) + (1 << 20)
        reason = None
        if jax.process_index() == 0 and paths.is_local(self.directory):  # an object store reports no free space
            free = shutil.disk_usage(self.directory).free
            if free < need:
                reason = (f"cannot write checkpoint step {step} to {self.directory}: it needs about "
                          f"{need / 2**20:.1f} MiB and the device has {free / 2**20:.1f} MiB free")
        reason = broadcast_text(reason)
        if reason is not None:
            raise OutputDirError(f"{reason}; the checkpoints already written ({self._manager.all_steps()}) are "
                                 "intact. Free some space, lower checkpoint.keep, or use another output_dir")

    def _storage_error(self, e: BaseException, step: int | None) -> BaseException:
        """An orbax/tensorstore write error as an `OutputDirError` naming the directory when the storage is
        full or read-only (tensorstore reports ENOSPC as RESOURCE_EXHAUSTED); other errors unchanged."""
        text = str(e)
        causes = {"No space left": "no space left on the device", "RESOURCE_EXHAUSTED": "no space left on the device",
                  "Read-only file system": "the file system is read-only", "os_error_code='30'": "the file system "
                  "is read-only", "Permission denied": "permission denied"}
        cause = next((c for k, c in causes.items() if k in text), None)
        if cause is None:
            return e
        which = f"checkpoint step {step}" if step is not None else "a checkpoint"
        return OutputDirError(f"cannot write {which} to {self.directory}: {cause}; the checkpoints already written "
                              f"are intact (an unfinished save is never committed)")

    def _start_watcher(self, step: int) -> None:
        """Process 0: a thread that writes the manifest as soon as orbax reports the save committed."""
        if jax.process_index() != 0:
            return
        stop = threading.Event()

        def watch():
            while self._manager.is_saving_in_progress():
                if stop.wait(0.02):
                    return
            try:
                self._write_manifest(step)
            except OSError:  # e.g. the step was deleted meanwhile; _flush tries again if it still exists
                pass

        thread = threading.Thread(target=watch, name=f"rdpo-manifest-{step}", daemon=True)
        thread.start()
        self._watcher = (thread, stop)

    def _write_manifest(self, step: int) -> None:
        d = self.step_dir(step)
        if d.is_dir() and not (d / MANIFEST).exists():
            write_manifest(d, self.hash_files)

    def _flush(self) -> None:
        """Waits for the running save to commit, then makes sure the pending steps have their manifests."""
        try:
            self._manager.wait_until_finished()  # re-raises an error of the background write
        except BaseException as e:
            failed = self._pending[-1] if self._pending else None
            self._pending = []  # a failed save is never committed, so it gets no manifest
            raise self._storage_error(e, failed) from e
        finally:
            if self._watcher is not None:
                thread, stop = self._watcher
                stop.set()
                thread.join()
                self._watcher = None
        if jax.process_index() == 0:
            for step in self._pending:
                self._write_manifest(step)
        self._pending = []

    def wait(self) -> None:
        """Blocks until every started save is committed and has its manifest."""
        self._flush()

    def close(self) -> None:
        """:meth:`wait`, then releases orbax's resources."""
        self._flush()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- reading

    def all_steps(self) -> list[int]:
        """Steps present on disk, oldest first (committed by orbax; not necessarily good)."""
        self._flush()
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def check_step(self, step: int) -> str | None:
        """None when the step's manifest verifies (process 0 checks, all processes get the verdict); else
        the reason."""
        reason = verify_manifest(self.step_dir(step)) if jax.process_index() == 0 else None
        return broadcast_text(reason)

    def latest_good_step(self) -> int | None:
        """The newest step whose files match its manifest (without reading the arrays), or None."""
        for step in reversed(self.all_steps()):
            if self.check_step(step) is None:
                return step
        return None

    def clear(self) -> list[int]:
        """Deletes every checkpoint in the directory (a run that starts afresh); returns the deleted steps."""
        steps = self.all_steps()
        for s in steps:
            self._manager.delete(s)
        self._bad_steps.clear()
        return steps

    def restore(self, target, *, step: int | None = None,
                accept: Callable[[int, dict], None] | None = None) -> tuple[int, Any, dict] | None:
        """Restores the newest good checkpoint onto the placement of ``target``.

        Args:
          target: a TrainState (or any pytree of the saved structure) of ``jax.ShapeDtypeStruct`` with
            shardings (see :func:`abstract_state`) or of concrete arrays (their shapes, dtypes, shardings are
            used; they are not modified). The shardings may be on a different mesh than the one that saved.
          step: restore exactly this step (raise CheckpointError if it is bad) instead of the newest good one.
          accept: called as ``accept(step, extras)`` on the chosen step's extras before its arrays are read;
            whatever it raises propagates (no fallback): e.g. the run's config check, which must see the
            stored config before a restore onto another model's shapes can fail.

        Returns ``(step, state, extras)``; None when the directory holds no checkpoint at all. Steps that fail
        (manifest missing or not matching, orbax error) are skipped with a warning naming the step and the
        reason, falling back to older ones; if checkpoints exist but none restores, raises CheckpointError
        listing every step and reason (rather than silently starting from scratch).
        """
        abstract = abstract_state(target)
        nested_target = _to_nested(abstract)
        steps = self.all_steps()
        if step is not None:
            if step not in steps:
                raise CheckpointError(f"no checkpoint of step {step} in {self.directory}; present: {steps}")
            steps = [step]
        if not steps:
            return None
        failures = []
        for s in reversed(steps):
            reason = self.check_step(s)
            result = None
            if reason is None and accept is not None:
                try:
                    extras = self._manager.restore(s, args=ocp.args.Composite(
                        **{EXTRAS_ITEM: ocp.args.JsonRestore()}))[EXTRAS_ITEM]
                except Exception as e:  # noqa: BLE001 - unreadable extras: try the previous step
                    reason = f"restore failed: {type(e).__name__}: {str(e)[:500]}"
                else:
                    accept(s, dict(extras or {}))
            if reason is None:
                try:
                    restored = self._manager.restore(s, args=ocp.args.Composite(**{
                        STATE_ITEM: ocp.args.StandardRestore(nested_target), EXTRAS_ITEM: ocp.args.JsonRestore()}))
                    result = (s, _from_nested(restored[STATE_ITEM], abstract), dict(restored[EXTRAS_ITEM] or {}))
                except Exception as e:  # noqa: BLE001 - any failure to read a step means: try the previous one
                    reason = f"restore failed: {type(e).__name__}: {str(e)[:500]}"
            if not _all_agree(result is not None) and reason is None:
                reason = "restore failed on another process"
            if reason is None:
                return result
            self._bad_steps.add(s)
            failures.append(f"step {s}: {reason}")
            warnings.warn(f"checkpoint step {s} in {self.directory} is not usable ({reason}); "
                          f"{'falling back to the previous one' if s != steps[0] else 'no older checkpoint'}",
                          stacklevel=2)
        raise CheckpointError(f"no usable checkpoint in {self.directory}:\n  " + "\n  ".join(failures))

