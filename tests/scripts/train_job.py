"""Runs `rdpo_jax.train.trainer.train` in a fresh process, for the multi-process and kill/resume tests.

usage: python train_job.py DEVICES [--kill-after-checkpoint STEP] [key=value ...]
DEVICES: simulated CPU devices of this process. With --kill-after-checkpoint the process SIGKILLs itself
right after the checkpoint of STEP has been saved and finalised (a preemption at the worst moment).
"""
import os
import signal
import sys

devices, args = sys.argv[1], sys.argv[2:]
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                           "--xla_cpu_enable_concurrency_optimized_scheduler=false")
os.environ["JAX_PLATFORMS"] = "cpu"
kill_after = None
if args and args[0] == "--kill-after-checkpoint":
    kill_after, args = int(args[1]), args[2:]

from rdpo_jax.config_loader import load_config  # noqa: E402
from rdpo_jax.train import checkpoint as ckpt_mod  # noqa: E402
from rdpo_jax.train.distributed import initialize_distributed  # noqa: E402

cfg = load_config(None, args)
initialize_distributed(cfg.distributed)

if kill_after is not None:
    original = ckpt_mod.Checkpointer.save

    def save_then_die(self, step, state, extras=None, **kw):
        saved = original(self, step, state, extras, **kw)
        if saved and step == kill_after:
            self.wait()
            os.kill(os.getpid(), signal.SIGKILL)
        return saved

    ckpt_mod.Checkpointer.save = save_then_die

from rdpo_jax.train.trainer import train  # noqa: E402

train(cfg)
