"""`python -m rdpo_jax` is the same as the `rdpo-jax` console script."""
from rdpo_jax.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
