"""The word-level vocabulary and the tokenizer of the synthetic preference tasks.

:func:`synthetic_tokenizer` returns a ``transformers.PreTrainedTokenizerFast`` built with the ``tokenizers``
library: a WordLevel model over :data:`VOCAB` (lower-cased; whitespace split, each punctuation character a
token of its own), special tokens ``<pad> <s> </s> <unk>`` and the chat markers ``<|system|> <|user|>
<|assistant|> <|eot|>``, and a Jinja chat template::

    <s><|user|> please name a red animal <|eot|>
    <|assistant|> the fox is red <|eot|>

Every turn is closed by ``<|eot|>``, which is also the tokenizer's ``eos_token`` (generation stops on it), so
a completion's scored tokens are its words plus exactly one ``<|eot|>`` (docs/spec.md section 1). ``</s>`` is kept as
a reserved special token. Synthetic text (lower-case words separated by single spaces) round-trips exactly
through ``encode``/``decode``. The words of the rationale-conditioning templates of docs/spec.md section 3 are in the
vocabulary too, so those templates tokenise without ``<unk>``.
"""

from __future__ import annotations

from typing import Any

COLOURS = ("red", "blue", "green", "yellow", "black", "white")
ANIMALS = ("cat", "dog", "fox", "bird", "fish", "frog", "bear", "owl")
ADJECTIVES = ("big", "small", "fast", "slow")
BITS = ("zip", "zap")  # bit 0, bit 1
PARITIES = ("even", "odd")

# Words of the task grammars (prompts, responses, rationales).
TASK_WORDS = (
    "please", "name", "a", "animal", "the", "is", "and", "it", "matches", "request", "response", "above",
    "below", "wins", "both", "responses", "look", "fine", "tell", "me", "about", "with", "zaps", "has", "so",
)
# Words and characters of the rationale-conditioning templates (docs/spec.md section 3), lower-cased.
TEMPLATE_WORDS = (
    "given", "prompt", "which", "of", "following", "assistant", "s", "more", "preferable", "strictly",
    "follows", "question", "or", "another", "to", "same", "better", "why", "rationale", "chosen", "rejected",
)
PUNCTUATION = (".", ",", ":", "?", "!", "'", '"', "(", ")", "-")

PAD, BOS, EOS_RESERVED, UNK = "<pad>", "<s>", "</s>", "<unk>"
SYSTEM, USER, ASSISTANT, EOT = "<|system|>", "<|user|>", "<|assistant|>", "<|eot|>"
SPECIAL_TOKENS = (PAD, BOS, EOS_RESERVED, UNK, SYSTEM, USER, ASSISTANT, EOT)


def _ordered_unique(words: Any) -> list[str]:
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


#: All ordinary tokens, in id order after the special tokens.
VOCAB: tuple[str, ...] = tuple(
    _ordered_unique(
        COLOURS + ANIMALS + ADJECTIVES + BITS + PARITIES + TASK_WORDS + TEMPLATE_WORDS + PUNCTUATION
    )
)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('role must be system, user or assistant, got ' + message['role']) }}"
    "{% endif %}"
    "<|{{ message['role'] }}|> {{ message['content'] }} <|eot|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def synthetic_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` for the synthetic tasks (ids: specials 0-7, then :data:`VOCAB`)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with single spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=[EOS_RESERVED, SYSTEM, USER, ASSISTANT],
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
