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
        "dpo": lambda: dpo(*base, *ref, **hp) if set(hp) <= DPO_KEYS and hp.get("loss_type", "sigmoid") in
        ("sigmoid", "ipo", "hinge", "robust") else dpo_catalogue(x, **hp),
        "cpo": lambda: cpo(*base, **{CPO_KEYS.get(k, k): v for k, v in hp.items()}),
        "rdpo": lambda: rdpo(*base, *ref, *rat, **hp),
        "orpo": lambda: orpo(*base, **hp),
        "rorpo": lambda: rorpo(*base, *rat, **hp),
        "simpo": lambda: simpo_forms(*base, **hp),
        "rsimpo": lambda: rsimpo(*base, *rat, **hp),
    }[name]()


# --- Losses II: TRL 1.16's DPO loss types, f-divergences, LD-DPO, WPO, R-DPO, SimPO/CPO forms ----------------
# Written from the papers' formulas (and TRL's documented conventions), in float64.

def sigmoid(x):
    return np.exp(log_sigmoid(x))


def f_score(rho, kind="reverse_kl", alpha=0.5, cap=40.0):
    """f'(u) at u = exp(rho): reverse KL log u; forward KL 1 - 1/u; JS log(2u / (1 + u));
    alpha (u^(alpha-1) - 1) / (alpha - 1); exponents capped at `cap`."""
    rho = np.asarray(rho, np.float64)
    if kind == "reverse_kl":
        return rho
    if kind == "forward_kl":
        return 1.0 - np.exp(np.minimum(-rho, cap))
    if kind == "js_divergence":
        return np.log(2.0) + log_sigmoid(rho)  # log(2u/(1+u)) = log 2 + log(u/(1+u))
    return (np.exp(np.minimum((alpha - 1.0) * rho, cap)) - 1.0) / (alpha - 1.0)


def sort_real(v, mask):
    """The real entries sorted ascending, placed at the real positions in order; padding 0."""
    out = np.zeros_like(v)
    out[mask] = np.sort(v[mask])
    return out


def dpo_type(loss_type, s_w, s_l, n_w, n_l, r_w, r_l, beta=0.1, eps=0.0, tau=0.05, f="reverse_kl", alpha=0.5,
             length_penalty=0.0, mask=None):
    rho_w, rho_l = s_w - r_w, s_l - r_l
    g_w, g_l = f_score(rho_w, f, alpha), f_score(rho_l, f, alpha)
    d = g_w - g_l
    m = np.ones(np.shape(s_w), bool) if mask is None else mask

    def cdpo(x):
        return -(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x)

    if loss_type == "sigmoid":
        return cdpo(beta * d - length_penalty * (n_w - n_l))
    if loss_type == "hinge":
        return np.maximum(0.0, 1.0 - beta * d)
    if loss_type == "ipo":
        return (g_w / np.maximum(n_w, 1) - g_l / np.maximum(n_l, 1) - 1 / (2 * beta)) ** 2
    if loss_type == "exo_pair":  # KL([q, 1-q] || [1-eps, eps]), q = sigma(beta Delta)
        x = beta * d
        return sigmoid(x) * (log_sigmoid(x) - np.log(1 - eps)) + sigmoid(-x) * (log_sigmoid(-x) - np.log(eps))
    if loss_type == "nca_pair":
        return -log_sigmoid(beta * rho_w) - 0.5 * log_sigmoid(-beta * rho_w) - 0.5 * log_sigmoid(-beta * rho_l)
    if loss_type == "robust":
        return ((1 - eps) * -log_sigmoid(beta * d) - eps * -log_sigmoid(-beta * d)) / (1 - 2 * eps)
    if loss_type == "bco_pair":
        return -log_sigmoid(beta * rho_w) - log_sigmoid(-beta * rho_l)
    if loss_type == "sppo_hard":
        return (rho_w - 1 / (2 * beta)) ** 2 + (rho_l + 1 / (2 * beta)) ** 2
    if loss_type == "aot":
        return cdpo(beta * (sort_real(s_w - s_l, m) - sort_real(r_w - r_l, m)))
    if loss_type == "aot_unpaired":
        return cdpo(beta * (sort_real(rho_w, m) - sort_real(rho_l, m)))
    if loss_type == "apo_zero":
        return 1 - sigmoid(beta * rho_w) + sigmoid(beta * rho_l)
    if loss_type == "apo_down":
        return sigmoid(beta * rho_w) + 1 - sigmoid(beta * (rho_w - rho_l))
    if loss_type == "discopop":  # mu e^-x written as e^{-x + log mu}: finite where e^-x alone overflows
        x = beta * d
        return sigmoid(-x / tau) * np.logaddexp(0.0, -x) + np.exp(np.minimum(-x + log_sigmoid(x / tau), 40.0))
    if loss_type == "sft":
        return -mean(s_w, n_w)
    if loss_type == "sigmoid_norm":
        return -log_sigmoid(beta * (g_w / np.maximum(n_w, 1) - g_l / np.maximum(n_l, 1)))
    raise ValueError(loss_type)


def wpo_weight(c_w, c_l, n_w, n_l):
    """exp(mean_t (log p_t - log sum_v p_v^2)) of chosen times that of rejected (WPO eq. 2, as TRL)."""
    return np.exp(c_w / np.maximum(n_w, 1) + c_l / np.maximum(n_l, 1))


def ld(total, prefix, alpha):
    """LD-DPO: the shared prefix at full weight, the verbose tail at weight alpha."""
    return prefix + alpha * (total - prefix)


def simpo_form(s_w, s_l, n_w, n_l, beta=2.0, gamma_beta_ratio=0.25, loss_type="sigmoid", eps=0.0):
    x = beta * (mean(s_w, n_w) - mean(s_l, n_l)) - gamma_beta_ratio * beta
    if loss_type == "hinge":
        return np.maximum(0.0, 1 - x)
    return -(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x)


def cpo(s_w, s_l, n_w, n_l, beta=0.1, loss_type="sigmoid", eps=0.0, cpo_alpha=1.0):
    if loss_type == "ipo":
        pref = (mean(s_w, n_w) - mean(s_l, n_l) - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        pref = np.maximum(0.0, 1 - beta * (s_w - s_l))
    else:
        pref = -(1 - eps) * log_sigmoid(beta * (s_w - s_l)) - eps * log_sigmoid(-beta * (s_w - s_l))
    return pref + cpo_alpha * -mean(s_w, n_w)


DPO_KEYS = {"beta", "loss_type", "label_smoothing", "nll_weight"}
CPO_KEYS = {"label_smoothing": "eps"}


def simpo_forms(s_w, s_l, n_w, n_l, sft_weight=0.0, label_smoothing=0.0, **hp):
    """SimPO in either form plus its SFT term."""
    return simpo_form(s_w, s_l, n_w, n_l, eps=label_smoothing, **hp) + sft_weight * -mean(s_w, n_w)


def dpo_catalogue(x, loss_type="sigmoid", loss_weights=None, beta=0.1, label_smoothing=0.0, nll_weight=0.0,
                  f_divergence_type="reverse_kl", f_alpha_divergence_coef=0.5, discopop_tau=0.05,
                  length_penalty=0.0):
    """The weighted sum of the listed types plus nll_weight * (-A_w)."""
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    weights = loss_weights or [1.0] * len(types)
    args = (x["chosen"], x["rejected"], x["chosen_tokens"], x["rejected_tokens"], x["ref_chosen"], x["ref_rejected"])
    total = sum(w * dpo_type(t, *args, beta=beta, eps=label_smoothing, tau=discopop_tau, f=f_divergence_type,
                             alpha=f_alpha_divergence_coef, length_penalty=length_penalty)
                for t, w in zip(types, weights, strict=True))
    return total + nll_weight * -mean(x["chosen"], x["chosen_tokens"])
