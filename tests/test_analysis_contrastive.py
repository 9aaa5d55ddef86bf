"""E4 (partial): InfoNCE / SMILE from critic scores, with the analytically optimal Gaussian critic."""

import math

import numpy as np
import pytest

from rdpo_jax.analysis.contrastive import infonce, smile


def gaussian_scores(m, k, d, rho, rng):
    """Batches of correlated Gaussians and the exact critic f(x, y) = log p(y | x) - log p(y)."""
    x = rng.normal(size=(m, k, d))
    y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=(m, k, d))
    # log N(y_j; rho x_i, 1 - rho^2) - log N(y_j; 0, 1), summed over coordinates
    diff = y[:, None, :, :] - rho * x[:, :, None, :]
    f = -0.5 * (diff**2).sum(-1) / (1 - rho**2) + 0.5 * (y[:, None, :, :] ** 2).sum(-1)
    return f - 0.5 * d * math.log(1 - rho**2)


@pytest.mark.parametrize("d,rho", [(1, 0.5), (5, 0.75)])
def test_infonce_and_smile_with_optimal_critic(d, rho):
    rng = np.random.default_rng(0)
    truth = -0.5 * d * math.log(1 - rho**2)
    f = gaussian_scores(8, 256, d, rho, rng)
    nce = infonce(f)
    assert nce.nats <= math.log(256) + 1e-12
    assert abs(nce.nats - truth) < 0.06 + 0.03 * truth and not nce.saturated
    sm = smile(f, tau=5.0)
    assert abs(sm.nats - truth) < 0.1 + 0.05 * truth


def test_infonce_cap_and_saturation_flag():
    rng = np.random.default_rng(1)
    f = gaussian_scores(4, 16, 10, 0.9, rng)  # true I = 8.3 nats >> log 16
    nce = infonce(f)
    assert nce.nats <= math.log(16) + 1e-12 and nce.saturated and "SATURATED" in repr(nce)
    assert infonce(1e6 * np.eye(8)).nats <= math.log(8) + 1e-9
    # independence: about zero
    assert abs(infonce(gaussian_scores(8, 128, 2, 0.0, rng)).nats) < 0.05
    with pytest.raises(ValueError, match=r"\(K, K\)"):
        infonce(np.zeros((3, 4)))
