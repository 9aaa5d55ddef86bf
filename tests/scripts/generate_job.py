"""Runs `rdpo-jax generate` as one process of a multi-process CPU job, for the data-parallel test.

usage: python generate_job.py DEVICES PROCESS_ID NUM_PROCESSES PORT [generate arguments ...]
DEVICES: simulated CPU devices of this process; the processes meet at 127.0.0.1:PORT (gloo collectives).
"""
import os
import sys

devices, process_id, num_processes, port, args = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], \
    sys.argv[5:]
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                           "--xla_cpu_enable_concurrency_optimized_scheduler=false")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)

from rdpo_jax.eval.generate_command import main  # noqa: E402

sys.exit(main(args))
