"""Chat templates (Jinja) and chat rendering to token ids, with the template rules of docs/spec.md section 4.

Our Jinja templates reproduce the packages' own Python renderers token for token (tested):

- :data:`LLAMA3_CHAT_TEMPLATE`: ``llama_models`` ``ChatFormat.encode_dialog_prompt``: ``<|begin_of_text|>``,
  then per message ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`` (content not
  trimmed; the header's ``"\\n\\n"`` is encoded apart from the content, as ``ChatFormat`` does, which
  matters for content that starts with a newline), and with ``add_generation_prompt`` the assistant header.
- :data:`MISTRAL_V1_CHAT_TEMPLATE`: ``mistral_common`` tokenizer v1: ``<s>``, user turns as the plain text
  ``[INST] {content} [/INST]``, assistant turns `` {content}</s>``; a system prompt goes before the *first*
  user turn's text as ``"{system}\\n\\n"``.
- :data:`MISTRAL_V3_CHAT_TEMPLATE`: tokenizer v3 (v2 the same): ``[INST]``/``[/INST]`` are control tokens,
  ``<s>[INST]{user}[/INST]{assistant}</s>...``; the system prompt goes before the *last* user turn's text, and
  trailing spaces of assistant content are stripped (``content.rstrip(" ")``, as the v2+ encoders do).

The space before each text piece comes from the tokenizer (sentencepiece's dummy prefix, reproduced per
piece between special tokens, see :mod:`rdpo_jax.data.tokenizers`), exactly as ``mistral_common`` encodes
each piece separately.

:func:`prepare_messages` applies the rules for templates that demand alternation (consecutive turns of one
role merged with a blank line, counted) and for templates that reject a system role (system text prepended
to the first user turn). :func:`encode_chat` renders with the tokenizer's own ``chat_template`` and encodes
so that BOS appears exactly once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from .schema import Message

LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)

# Shared Jinja preamble: join the system messages with a blank line (as mistral_common does), check that the
# other turns alternate user/assistant starting with user, and find the first and last user turns.
_MISTRAL_PREAMBLE = (
    "{%- set ns = namespace(sys='', n=0, first=-1, last=-1, prev='assistant') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}"
    "{%- set ns.sys = ns.sys + ('\\n\\n' if ns.sys else '') + m['content'] -%}"
    "{%- else -%}"
    "{%- if m['role'] not in ['user', 'assistant'] -%}"
    "{{- raise_exception('Mistral chat: role must be system, user or assistant, got ' + m['role']) -}}"
    "{%- endif -%}"
    "{%- if m['role'] == ns.prev -%}"
    "{{- raise_exception('Mistral chat: conversation roles must alternate user/assistant/user/... "
    "starting with user') -}}"
    "{%- endif -%}"
    "{%- if m['role'] == 'user' -%}{%- if ns.first < 0 -%}{%- set ns.first = ns.n -%}{%- endif -%}"
    "{%- set ns.last = ns.n -%}{%- endif -%}"
    "{%- set ns.prev = m['role'] -%}{%- set ns.n = ns.n + 1 -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- bos_token -}}"
    "{%- set ns.n = 0 -%}"
)


def _mistral_template(system_at: str, user_open: str, user_close: str, assistant_open: str,
                      assistant_content: str) -> str:
    return (
        _MISTRAL_PREAMBLE
        + "{%- for m in messages if m['role'] != 'system' -%}"
        "{%- if m['role'] == 'user' -%}"
        "{%- if ns.sys and ns.n == ns." + system_at + " -%}"
        "{%- set content = ns.sys + '\\n\\n' + m['content'] -%}"
        "{%- else -%}{%- set content = m['content'] -%}{%- endif -%}"
        "{{- '" + user_open + "' + content + '" + user_close + "' -}}"
        "{%- else -%}"
        "{{- '" + assistant_open + "' + " + assistant_content + " + eos_token -}}"
        "{%- endif -%}"
        "{%- set ns.n = ns.n + 1 -%}"
        "{%- endfor -%}"
    )


# mistral_common's v1 encoder keeps assistant content as it is; v2 and later strip its trailing spaces
# (``content.rstrip(" ")``: spaces only, not newlines or tabs).
MISTRAL_V1_CHAT_TEMPLATE = _mistral_template("first", "[INST] ", " [/INST]", " ", "m['content']")
MISTRAL_V3_CHAT_TEMPLATE = _mistral_template("last", "[INST]", "[/INST]", "", "m['content'].rstrip(' ')")

#: Attribute set on tokenizers whose template demands user/assistant alternation (ours: Mistral).
ALTERNATION_ATTR = "_rdpo_requires_alternation"
#: Attribute of tokenizers whose reference renderer encodes the text after each of these markers as a
#: separate piece (ours: Llama 3, whose ``ChatFormat`` encodes the header's ``"\n\n"`` apart from the content).
PIECE_BREAKS_ATTR = "_rdpo_piece_breaks"


@dataclasses.dataclass
class ChatStats:
    """What :func:`prepare_messages` changed, counted over calls: merged same-role turns, folded systems."""

    merged_turns: int = 0
    merged_examples: int = 0
    system_folded: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def merge_consecutive(messages: Sequence[Message]) -> tuple[list[Message], int]:
    """Merge consecutive messages of the same role with a blank line (``"\\n\\n"``); return the number merged."""
    out: list[Message] = []
    merged = 0
    for m in messages:
        if out and out[-1]["role"] == m["role"]:
            out[-1] = {"role": m["role"], "content": out[-1]["content"] + "\n\n" + m["content"]}
            merged += 1
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out, merged


def fold_system(messages: Sequence[Message]) -> list[Message]:
    """Prepend the system text (blank-line joined) to the first user turn and drop the system messages."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user":
            m["content"] = system + "\n\n" + m["content"] if system else m["content"]
            break
    return rest  # type: ignore[return-value]


def _try_render(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool) -> str | None:
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception:  # noqa: BLE001 - any template error means "this form is rejected"
        return None


def prepare_messages(tokenizer: Any, messages: Sequence[Message], stats: ChatStats | None = None
                     ) -> list[Message]:
    """Apply the template rules of docs/spec.md section 4 before rendering.

    - Templates that demand alternation (ours for Mistral, or any template that raises on the raw list but
      accepts the merged one): consecutive same-role turns are merged with a blank line (counted).
    - Templates that reject a system role: the system text is prepended to the first user turn (counted).
    """
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    merged, n_merged = merge_consecutive(msgs)
    if n_merged and (getattr(tokenizer, ALTERNATION_ATTR, False) or _try_render(tokenizer, msgs, False) is None):
        msgs = merged
        if stats is not None:
            stats.merged_turns += n_merged
            stats.merged_examples += 1
    if any(m["role"] == "system" for m in msgs) and _try_render(tokenizer, msgs, False) is None:
        folded = fold_system(msgs)
        if _try_render(tokenizer, folded, False) is not None:
            msgs = folded
            if stats is not None:
                stats.system_folded += 1
    return msgs  # type: ignore[return-value]


def _bos_added_by_encode(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _pieces(text: str, breaks: Sequence[str]) -> list[str]:
    """``text`` cut right after every occurrence of each marker in ``breaks`` (no marker: ``[text]``)."""
    pieces = [text]
    for marker in breaks:
        pieces = [part for piece in pieces for part in re.split(f"(?<={re.escape(marker)})", piece)]
    return [p for p in pieces if p]


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Encode already-rendered chat text: special tokens in the text are kept as single ids, and BOS appears
    exactly once at the start if the tokenizer uses one (prepended only when the template did not write it).
    Text after a marker of the tokenizer's `PIECE_BREAKS_ATTR` is encoded as a separate piece, as its
    reference renderer does (so a Llama 3 message that starts with a newline keeps the header's ``"\n\n"``
    token apart)."""
    ids = [i for piece in _pieces(text, getattr(tokenizer, PIECE_BREAKS_ATTR, ()))
           for i in tokenizer(piece, add_special_tokens=False)["input_ids"]]
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos) and _bos_added_by_encode(tokenizer):
        ids = [bos] + ids
    return ids


def render_chat(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
    """The chat text from the tokenizer's own ``chat_template`` (messages already prepared)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no chat_template: set tokenizer.chat_template (Jinja) or "
            "use rdpo_jax.data.load_tokenizer('llama3' | 'mistral-v1' | 'mistral-v3')"
        )
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def encode_chat(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = False,
                stats: ChatStats | None = None) -> list[int]:
    """Token ids of a conversation rendered by the tokenizer's chat template (rules of
    :func:`prepare_messages` applied; BOS exactly once; special tokens single ids)."""
    msgs = prepare_messages(tokenizer, messages, stats)
    return encode_text(tokenizer, render_chat(tokenizer, msgs, add_generation_prompt=add_generation_prompt))
