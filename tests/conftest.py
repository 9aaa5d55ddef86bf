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
