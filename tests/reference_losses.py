"""Independent float64 numpy reference for the losses of docs/spec.md section 2 (written from the spec, not the code).

Every function takes float64 arrays (S_w, S_l, n_w, n_l, R_w, R_l, S_r, n_r) and returns the per-pair loss.
"""
import numpy as np


def log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return -np.logaddexp(0.0, -x)


def log1mexp(a):
    a = np.minimum(np.asarray(a, np.float64), -1e-12)
    with np.errstate(divide="ignore"):
        return np.where(a > -np.log(2.0), np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


def mean(s, n):
    return s / np.maximum(n, 1.0)


def dpo(s_w, s_l, n_w, n_l, r_w, r_l, beta=0.1, loss_type="sigmoid", label_smoothing=0.0, nll_weight=0.0):
    h = (s_w - r_w) - (s_l - r_l)
    eps = label_smoothing
    if loss_type == "sigmoid":
        loss = -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)
    elif loss_type == "ipo":
        h_bar = (s_w - r_w) / np.maximum(n_w, 1) - (s_l - r_l) / np.maximum(n_l, 1)
        loss = (h_bar - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        loss = np.maximum(0.0, 1 - beta * h)
    elif loss_type == "robust":
        loss = (-(1 - eps) * log_sigmoid(beta * h) + eps * log_sigmoid(-beta * h)) / (1 - 2 * eps)
    else:
        raise ValueError(loss_type)
    return loss + nll_weight * (-mean(s_w, n_w))


def rdpo(s_w, s_l, n_w, n_l, r_w, r_l, s_r, n_r, beta=0.1, gamma=0.001, rationale_form="sigmoid",
         rationale_norm="sum", **dpo_kw):
    s = s_r if rationale_norm == "sum" else mean(s_r, n_r)
    term = -log_sigmoid(gamma * s) if rationale_form == "sigmoid" else gamma * (-s)
    return dpo(s_w, s_l, n_w, n_l, r_w, r_l, beta=beta, **dpo_kw) + term


def orpo(s_w, s_l, n_w, n_l, lam=0.1):
    a_w, a_l = mean(s_w, n_w), mean(s_l, n_l)
    L = (a_w - a_l) - (log1mexp(a_w) - log1mexp(a_l))
    return -a_w + lam * (-log_sigmoid(L))


def rorpo(s_w, s_l, n_w, n_l, s_r, n_r, lam=0.1, gamma=1.0):
    return orpo(s_w, s_l, n_w, n_l, lam=lam) + gamma * (-mean(s_r, n_r))


def simpo(s_w, s_l, n_w, n_l, beta=2.0, gamma_beta_ratio=0.25, sft_weight=0.0):
    a_w, a_l = mean(s_w, n_w), mean(s_l, n_l)
    return -log_sigmoid(beta * (a_w - a_l) - gamma_beta_ratio * beta) + sft_weight * (-a_w)


def rsimpo(s_w, s_l, n_w, n_l, s_r, n_r, beta=2.0, gamma_beta_ratio=0.25, sft_weight=0.0, gamma=1.0):
    return simpo(s_w, s_l, n_w, n_l, beta, gamma_beta_ratio, sft_weight) + gamma * (-mean(s_r, n_r))


def reference_loss(name, x, **hp):
    """Dispatch on a dict x of float64 arrays keyed like SequenceLogps fields."""
    base = (x["chosen"], x["rejected"], x["chosen_tokens"], x["rejected_tokens"])
    ref = (x["ref_chosen"], x["ref_rejected"])
    rat = (x["rationale"], x["rationale_tokens"])
    return {
        "dpo": lambda: dpo(*base, *ref, **hp),
        "rdpo": lambda: rdpo(*base, *ref, *rat, **hp),
        "orpo": lambda: orpo(*base, **hp),
        "rorpo": lambda: rorpo(*base, *rat, **hp),
        "simpo": lambda: simpo(*base, **hp),
        "rsimpo": lambda: rsimpo(*base, *rat, **hp),
    }[name]()
