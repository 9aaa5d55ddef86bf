"""Synthetic preference tasks with an oracle and a known amount of rationale information.

Two tasks over the small word-level vocabulary of :mod:`rdpo_jax.data.synthetic_vocab` (prompts and
responses of at most 12 words):

- ``colour``: prompt ``please name a {c} animal``; responses ``the {animal} is {colour}`` (optionally
  ``and it is {adjective}``). The oracle prefers the response whose colour is the requested one.
- ``parity``: prompt ``tell me about the {animal} with {even|odd} zaps``; responses
  ``the {animal} is {colour} b_1 .. b_k`` (two different colours) with k hidden bits written ``zip`` (0)
  / ``zap`` (1). The oracle prefers the response whose number of ``zap`` has the requested parity: a
  deterministic function of the responses (Shannon ``I(W; R | C) = 0`` without label noise) that a small
  model finds hard to compute, while the rationale states it (usable information > 0).

Generative model of one pair (docs/spec.md section 5). Two responses are drawn in random
slots 0 and 1, exactly one of them good; ``T`` is the good one's slot (uniform). The label
``W = T`` flipped with probability ``eta`` (label noise); chosen is slot ``W``. The rationale explains the
label (``rationale_follows="label"``, an annotator who rationalises the given preference) or the truth
(``"truth"``, an annotator who judges the responses himself): with probability ``u`` it is vacuous
(``both responses look fine``, no verdict); otherwise it supports the followed slot (``W`` or ``T``) with
probability ``1 - eps`` and the other one with probability ``eps`` (misleading). Its verdict ``V`` (the
slot it supports, or none) is an erasure + flip channel of ``W``, with flip ``eps`` (label) or
``eta * eps`` (truth; ``a * b = a (1 - b) + (1 - a) b``), so

    I(W; V) = (1 - u) (log 2 - h(eps))          label     (nats; :func:`rationale_information`)
            = (1 - u) (log 2 - h(eta * eps))    truth
    I(W; V | C) = (1 - u) (h(eta * eps) - h(eps))  label  (C = prompt and responses, which fix T;
                = 0                               truth    :func:`conditional_rationale_information`)

(given ``T``, a truth-following ``V`` is independent of ``W``), and the rationale text determines ``V``
given the two responses, so ``I(W; R, C) = I(W; V, C)``.

Wording: ``content`` rationales name the supported response's content (``the {colour} {animal} matches the
request``; parity: ``the {colour} {animal} has {even|odd} zaps so it wins``, stating the requested parity
and naming the response by its colour, which differs between the two parity responses, so that a small model
can tell which response is meant without computing a parity); ``leaky``
rationales name its position in the official template, where chosen is always shown above
(``response above wins`` / ``response below wins``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rdpo_jax.config_fields import UNIT_INTERVAL, Range, check_settings, setting

from .schema import PreferenceExample
from .synthetic_vocab import ADJECTIVES, ANIMALS, BITS, COLOURS, PARITIES, SPECIAL_TOKENS

TASKS = ("colour", "parity")
WORDINGS = ("content", "leaky")
RATIONALE_FOLLOWS = ("label", "truth")
DEFAULT_PARITY_BITS = 4
PARITY_BITS = Range("an integer in [1, 8] (responses of at most 12 words)", lambda k: 1 <= k <= 8)
VACUOUS_RATIONALE = "both responses look fine"
_SPECIAL = frozenset(SPECIAL_TOKENS)


def binary_entropy(p: float) -> float:
    """``h(p) = -p log p - (1-p) log(1-p)`` in nats (0 at p in {0, 1})."""
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0.0)


def _flip_mix(eta: float, eps: float) -> float:
    """``eta * eps = eta (1 - eps) + (1 - eta) eps``: flip probability of two independent flips in a row."""
    return eta * (1.0 - eps) + (1.0 - eta) * eps


def _check_follows(follows: str) -> None:
    if follows not in RATIONALE_FOLLOWS:
        raise ValueError(f"rationale_follows={follows!r}; accepted: {list(RATIONALE_FOLLOWS)}")


def rationale_information(u: float, eps: float, eta: float = 0.0, follows: str = "label") -> float:
    """Closed-form Shannon ``I(W; V)`` (nats) of the erasure + flip channel: ``(1-u)(log 2 - h(f))`` with
    flip ``f = eps`` (rationale follows the label) or ``f = eta(1-eps) + (1-eta)eps`` (follows the truth)."""
    _check_follows(follows)
    flip = eps if follows == "label" else _flip_mix(eta, eps)
    return (1.0 - u) * (math.log(2.0) - binary_entropy(flip))


def conditional_rationale_information(u: float, eps: float, eta: float, follows: str = "label") -> float:
    """``I(W; V | C)`` nats: ``(1-u)(h(eta(1-eps) + (1-eta) eps) - h(eps))`` when the rationale follows the
    label (0 when ``eta = 0``); 0 when it follows the truth (C fixes T, and V depends on W only through T)."""
    _check_follows(follows)
    if follows == "truth":
        return 0.0
    return (1.0 - u) * (binary_entropy(_flip_mix(eta, eps)) - binary_entropy(eps))


def plugin_mutual_information(x: Sequence[Any], y: Sequence[Any]) -> float:
    """Plug-in (empirical-count) estimate of ``I(X; Y)`` in nats for two discrete sequences."""
    if len(x) != len(y) or not len(x):
        raise ValueError("x and y must be non-empty and of equal length")
    xs, xi = np.unique(np.asarray(x, dtype=object).astype(str), return_inverse=True)
    ys, yi = np.unique(np.asarray(y, dtype=object).astype(str), return_inverse=True)
    joint = np.zeros((len(xs), len(ys)))
    np.add.at(joint, (xi, yi), 1.0)
    joint /= joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (px @ py)[nz])).sum())


# ---------------------------------------------------------------------------------------------------------
# The oracle: parses any text, never raises.


def _words(text: Any) -> list[str]:
    """Lower-cased words of ``text`` without special tokens; non-strings give no words."""
    if not isinstance(text, str):
        return []
    return [w for w in text.lower().split() if w not in _SPECIAL]


def _parse_prompt(prompt: Any) -> tuple[str, str] | None:
    """``("colour", c)`` or ``("parity", parity)`` (parity also checks the animal slot), else None."""
    w = _words(prompt)
    if len(w) == 5 and w[:3] == ["please", "name", "a"] and w[3] in COLOURS and w[4] == "animal":
        return "colour", w[3]
    if (len(w) == 8 and w[:4] == ["tell", "me", "about", "the"] and w[4] in ANIMALS and w[5] == "with"
            and w[6] in PARITIES and w[7] == "zaps"):
        return "parity", w[6]
    return None


@dataclasses.dataclass(frozen=True)
class Oracle:
    """Judges any (prompt, response) text of the synthetic tasks; malformed input scores 0, never raises.

    ``score``: 0 malformed (prompt or response outside the grammar), 1 well-formed but without the requested
    property, 2 well-formed with it. ``judge(prompt, a, b)``: +1 if a scores higher, -1 if b does, 0 on a tie.
    """

    parity_bits: int = DEFAULT_PARITY_BITS

    def score(self, prompt: Any, response: Any) -> int:
        try:
            return self._score(prompt, response)
        except Exception:  # noqa: BLE001 - the oracle must never raise on generated text
            return 0

    def _score(self, prompt: Any, response: Any) -> int:
        task = _parse_prompt(prompt)
        w = _words(response)
        if task is None or len(w) < 4 or w[0] != "the" or w[1] not in ANIMALS or w[2] != "is" \
                or w[3] not in COLOURS:
            return 0
        kind, want = task
        rest = w[4:]
        if kind == "colour":
            if rest and not (len(rest) == 4 and rest[:3] == ["and", "it", "is"] and rest[3] in ADJECTIVES):
                return 0
            return 2 if w[3] == want else 1
        if len(rest) != self.parity_bits or any(b not in BITS for b in rest):
            return 0
        return 2 if PARITIES[rest.count(BITS[1]) % 2] == want else 1

    def judge(self, prompt: Any, a: Any, b: Any) -> int:
        sa, sb = self.score(prompt, a), self.score(prompt, b)
        return (sa > sb) - (sa < sb)

    def rationale_verdict(self, prompt: Any, chosen: Any, rejected: Any, rationale: Any) -> int:
        """Which response a rationale argues for: +1 chosen, -1 rejected, 0 none (vacuous or unreadable)."""
        w = _words(rationale)
        if w == ["response", "above", "wins"]:
            return 1
        if w == ["response", "below", "wins"]:
            return -1
        task = _parse_prompt(prompt)
        wc, wr = _words(chosen), _words(rejected)
        if task is None or len(wc) < 4 or len(wr) < 4:
            return 0
        if task[0] == "colour" and len(w) == 6 and w[0] == "the" and w[3:] == ["matches", "the", "request"]:
            named = w[1:3]
            key_c, key_r = [wc[3], wc[1]], [wr[3], wr[1]]
        elif task[0] == "parity" and len(w) == 9 and w[0] == "the" and w[3] == "has" \
                and w[5:] == ["zaps", "so", "it", "wins"]:
            named = w[1:3]
            key_c, key_r = [wc[3], wc[1]], [wr[3], wr[1]]
        else:
            return 0
        if named == key_c and named != key_r:
            return 1
        if named == key_r and named != key_c:
            return -1
        return 0


# ---------------------------------------------------------------------------------------------------------
# The generator.


@dataclasses.dataclass(frozen=True)
class SyntheticPair:
    """One generated pair with its ground truth.

    Attributes:
      example: the :class:`PreferenceExample` (prompt, chosen, rejected, rationale).
      responses: the two responses in their random slots (0, 1).
      truth: the slot the oracle prefers (T).
      label: the slot labelled chosen (W; differs from ``truth`` under label noise).
      verdict: the slot the rationale argues for, or None when vacuous (V).
      kind: ``"informative"`` (argues for chosen), ``"misleading"`` (argues for rejected) or ``"vacuous"``;
        relative to the label, whichever slot the rationale follows.
    """

    example: PreferenceExample
    responses: tuple[str, str]
    truth: int
    label: int
    verdict: int | None
    kind: str


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """A synthetic preference task with controllable rationale informativeness.

    Its fields are also the run config's ``data.synthetic`` keys (`rdpo_jax.config.SyntheticConfig`), so
    they are declared once, here, with their descriptions and accepted values.
    """

    task: str = setting("colour", choices=TASKS, doc="`colour` (an easy feature) or `parity` (the parity of "
                                                     "`parity_bits` hidden bits)")
    u: float = setting(0.0, within=UNIT_INTERVAL, doc="fraction of vacuous rationales (no verdict)")
    eps: float = setting(0.0, within=UNIT_INTERVAL, doc="fraction of misleading rationales among the non-vacuous "
                                                        "ones (they argue for the rejected response)")
    eta: float = setting(0.0, within=UNIT_INTERVAL, doc="label noise: probability that chosen is the oracle's worse "
                                                        "response")
    wording: str = setting("content", choices=WORDINGS, doc="what a rationale names: the supported response's "
                                                            "content (`content`), or its position (`leaky`)")
    parity_bits: int = setting(DEFAULT_PARITY_BITS, within=PARITY_BITS, doc="hidden bits of the parity task")
    rationale_follows: str = setting("label", choices=RATIONALE_FOLLOWS,
                                     doc="whom a rationale argues for: chosen (`label`, up to `eps`), or the oracle's "
                                         "better response (`truth`, up to `eps`; then label noise `eta` also makes "
                                         "rationales misleading)")

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def oracle(self) -> Oracle:
        return Oracle(parity_bits=self.parity_bits)

    def information(self) -> float:
        """Closed-form ``I(W; V)`` of this task's rationales (nats)."""
        return rationale_information(self.u, self.eps, self.eta, self.rationale_follows)

    def conditional_information(self) -> float:
        """Closed-form ``I(W; V | prompt, responses)`` (nats); 0 without label noise or when following truth."""
        return conditional_rationale_information(self.u, self.eps, self.eta, self.rationale_follows)

    # ---- sampling ----------------------------------------------------------------------------------

    def _pair_content(self, rng: np.random.Generator) -> tuple[str, list[str], list[str]]:
        """Prompt, good response words, bad response words."""
        if self.task == "colour":
            want = COLOURS[rng.integers(len(COLOURS))]
            others = [c for c in COLOURS if c != want]

            def response(colour: str) -> list[str]:
                w = ["the", ANIMALS[rng.integers(len(ANIMALS))], "is", colour]
                if rng.random() < 0.5:
                    w += ["and", "it", "is", ADJECTIVES[rng.integers(len(ADJECTIVES))]]
                return w

            good, bad = response(want), response(others[rng.integers(len(others))])
            return f"please name a {want} animal", good, bad
        animal = ANIMALS[rng.integers(len(ANIMALS))]
        want = int(rng.integers(2))
        k = self.parity_bits

        def bits_with_parity(parity: int) -> list[str]:
            b = rng.integers(2, size=k)
            if b.sum() % 2 != parity:
                b[rng.integers(k)] ^= 1
            return [BITS[int(x)] for x in b]

        colour_good, colour_bad = (COLOURS[int(i)] for i in rng.choice(len(COLOURS), size=2, replace=False))
        good = ["the", animal, "is", colour_good, *bits_with_parity(want)]
        bad = ["the", animal, "is", colour_bad, *bits_with_parity(1 - want)]
        return f"tell me about the {animal} with {PARITIES[want]} zaps", good, bad

    def _rationale(self, prompt: str, supported: list[str], supports_chosen: bool) -> str:
        if self.wording == "leaky":
            return f"response {'above' if supports_chosen else 'below'} wins"
        if self.task == "colour":
            return f"the {supported[3]} {supported[1]} matches the request"
        want = prompt.split()[6]
        return f"the {supported[3]} {supported[1]} has {want} zaps so it wins"

    def sample(self, n: int, seed: int = 0) -> list[SyntheticPair]:
        """``n`` pairs from the generative model (deterministic in ``seed``)."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x5EED])))
        pairs = []
        for _ in range(n):
            prompt, good, bad = self._pair_content(rng)
            truth = int(rng.integers(2))
            slots = [good, bad] if truth == 0 else [bad, good]
            label = truth if rng.random() >= self.eta else 1 - truth
            if rng.random() < self.u:
                verdict, kind, rationale = None, "vacuous", VACUOUS_RATIONALE
            else:
                followed = label if self.rationale_follows == "label" else truth
                verdict = 1 - followed if rng.random() < self.eps else followed
                kind = "informative" if verdict == label else "misleading"
                rationale = self._rationale(prompt, slots[verdict], supports_chosen=verdict == label)
            chosen, rejected = " ".join(slots[label]), " ".join(slots[1 - label])
            pairs.append(SyntheticPair(
                example=PreferenceExample(prompt, chosen, rejected, rationale),
                responses=(" ".join(slots[0]), " ".join(slots[1])),
                truth=truth, label=label, verdict=verdict, kind=kind,
            ))
        return pairs

    def examples(self, n: int, seed: int = 0) -> list[PreferenceExample]:
        """Just the :class:`PreferenceExample` s of :meth:`sample`."""
        return [p.example for p in self.sample(n, seed)]


def shuffle_rationales(examples: Sequence[PreferenceExample], seed: int = 0) -> list[PreferenceExample]:
    """Control set: every example gets the rationale of another (a random permutation of rationales)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x5F1])))
    perm = rng.permutation(len(examples))
    return [dataclasses.replace(ex, rationale=examples[int(j)].rationale) for ex, j in zip(examples, perm,
                                                                                           strict=True)]


def empirical_information(pairs: Sequence[SyntheticPair], oracle: Oracle | None = None) -> float:
    """Plug-in ``I(W; V)`` (nats) from the (label slot, rationale-verdict slot) table.

    The verdict is decoded from the rationale text with :meth:`Oracle.rationale_verdict` (not taken from
    the generator's bookkeeping), then mapped to a slot: chosen's slot is ``label``.
    """
    oracle = oracle or Oracle()
    labels, verdicts = [], []
    for p in pairs:
        ex = p.example
        v = oracle.rationale_verdict(ex.prompt, ex.chosen, ex.rejected, ex.rationale)
        labels.append(p.label)
        verdicts.append("none" if v == 0 else (p.label if v > 0 else 1 - p.label))
    return plugin_mutual_information(labels, verdicts)
