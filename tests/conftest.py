"""Test configuration: 8 simulated CPU devices, set before JAX is imported anywhere."""
import os

# XLA:CPU's concurrency-optimised scheduler can order an SPMD program's collectives differently on different
# simulated devices, which deadlocks fsdp-sharded steps (seen with jax 0.10.2); the plain scheduler does not.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_cpu_enable_concurrency_optimized_scheduler=false"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")



import json  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_default(tmp_path_factory):
    """The README's main job in its fast form (SFT, then RDPO and DPO from it): (root, summary table).
    Trained once for the whole session, also across pytest-xdist workers (a file lock in their shared base
    directory: the first worker trains, the others wait and reuse it); the analysis command tests and the
    notebook analyse its checkpoints."""
    from filelock import FileLock

    from rdpo_jax.tiny import run_tiny

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this session's, seen by all workers
    root = shared / "tiny_default"
    with FileLock(str(shared / "tiny_default.lock")):
        if not (root / "summary.json").exists():
            run_tiny(root, fast=True)
    return root, json.loads((root / "summary.json").read_text())


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the group markers
def pytest_collection_modifyitems(config, items):
    """Every test that uses the shared tiny run goes to one xdist worker (``--dist loadgroup``, set in
    pyproject.toml), and first: that worker trains the run and then reuses it, while the other worker runs
    the rest of the suite instead of waiting on the lock."""
    uses = [item for item in items if "tiny_default" in getattr(item, "fixturenames", ())]
    for item in uses:
        item.add_marker(pytest.mark.xdist_group("tiny_default"))
    items[:] = uses + [item for item in items if item not in uses]
