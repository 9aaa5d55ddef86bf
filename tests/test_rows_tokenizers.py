"""Rendered chat ids of our Llama 3 / Mistral tokenizers against the packages' own Python renderers."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("llama_models")
pytest.importorskip("mistral_common")

from rdpo_jax.data.chat import ChatStats, encode_chat  # noqa: E402
from rdpo_jax.data.tokenizers import load_tokenizer  # noqa: E402

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Name a red animal."}, {"role": "assistant", "content": "A fox."},
     {"role": "user", "content": "And   a blue one?\n\nExplain  briefly. 123456 née 🙂"}],
    [{"role": "system", "content": "Be kind.\nAlways."}, {"role": "user", "content": "Hi  there"},
     {"role": "assistant", "content": " Hello! How can I help?"}, {"role": "user", "content": "Tell me a joke."},
     {"role": "assistant", "content": "Why did the chicken cross the road?"},
     {"role": "user", "content": "  Why? Because."}],
]


@pytest.fixture(scope="module")
def llama_ref():
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer

    return ChatFormat(Tokenizer.get_instance())


def _mistral_ref(version):
    import mistral_common
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    d = os.path.join(os.path.dirname(mistral_common.__file__), "data")
    name = {"mistral-v1": "tokenizer.model.v1", "mistral-v3": "mistral_instruct_tokenizer_240323.model.v3"}[version]
    return MistralTokenizer.from_file(os.path.join(d, name))


def _mistral_encode(ref, messages):
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    cls = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    req = ChatCompletionRequest(messages=[cls[m["role"]](content=m["content"]) for m in messages])
    return ref.encode_chat_completion(req).tokens


@pytest.mark.parametrize("conv", CONVERSATIONS)
def test_llama3_matches_chat_format(llama_ref, conv):
    from llama_models.datatypes import RawMessage

    tok = load_tokenizer("llama3")
    want = llama_ref.encode_dialog_prompt([RawMessage(role=m["role"], content=m["content"]) for m in conv]).tokens
    got = encode_chat(tok, conv, add_generation_prompt=True)
    assert got == want
    assert got.count(128000) == 1 and got[0] == 128000  # BOS exactly once


def test_llama3_special_tokens_are_single_ids():
    tok = load_tokenizer("llama3")
    assert len(tok) == 128256
    for text, i in [("<|begin_of_text|>", 128000), ("<|end_of_text|>", 128001), ("<|start_header_id|>", 128006),
                    ("<|end_header_id|>", 128007), ("<|eom_id|>", 128008), ("<|eot_id|>", 128009),
                    ("<|reserved_special_token_245|>", 128255)]:
        assert tok(text, add_special_tokens=False)["input_ids"] == [i]
    assert tok.eos_token_id == 128009 and tok.bos_token_id == 128000


@pytest.mark.parametrize("version", ["mistral-v1", "mistral-v3"])
def test_mistral_matches_mistral_common(version):
    ref = _mistral_ref(version)
    tok = load_tokenizer(version)
    for conv in CONVERSATIONS:
        want = _mistral_encode(ref, conv)
        got = encode_chat(tok, conv, add_generation_prompt=True)
        assert got == want, (version, conv)
        assert got.count(1) == 1 and got[0] == 1


def test_mistral_system_prompt_placement():
    conv = CONVERSATIONS[3]
    v1 = load_tokenizer("mistral-v1").apply_chat_template(conv, tokenize=False)
    v3 = load_tokenizer("mistral-v3").apply_chat_template(conv, tokenize=False)
    assert v1.startswith("<s>[INST] Be kind.\nAlways.\n\nHi  there [/INST]")
    assert "[INST]Be kind.\nAlways.\n\nTell me a joke.[/INST]" not in v3  # last user turn, not the first
    assert "[INST]Be kind.\nAlways.\n\n  Why? Because.[/INST]" in v3
    assert v3.startswith("<s>[INST]Hi  there[/INST]")


def test_mistral_special_tokens():
    v3, v1 = load_tokenizer("mistral-v3"), load_tokenizer("mistral-v3".replace("3", "1"))
    assert v3("[INST]", add_special_tokens=False)["input_ids"] == [3]
    assert v3("[/INST]", add_special_tokens=False)["input_ids"] == [4]
    assert len(v1("[INST]", add_special_tokens=False)["input_ids"]) > 1  # plain text in v1
    assert v1.eos_token_id == v3.eos_token_id == 2


def test_consecutive_same_role_merged_for_mistral_only():
    conv = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    stats = ChatStats()
    got = encode_chat(load_tokenizer("mistral-v3"), conv, add_generation_prompt=True, stats=stats)
    assert got == _mistral_encode(_mistral_ref("mistral-v3"), conv)  # mistral_common merges with "\n\n" too
    assert stats.merged_turns == 1
    stats = ChatStats()
    encode_chat(load_tokenizer("llama3"), conv, stats=stats)
    assert stats.merged_turns == 0


def test_system_folded_for_template_without_system():
    from rdpo_jax.data import synthetic_tokenizer

    tok = synthetic_tokenizer()
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
        "{% endif %}<|{{ m['role'] }}|> {{ m['content'] }} <|eot|>\n{% endfor %}")
    stats = ChatStats()
    ids = encode_chat(tok, [{"role": "system", "content": "red"}, {"role": "user", "content": "blue"}], stats=stats)
    assert stats.system_folded == 1
    assert tok.decode(ids) .split() == ["<s>", "<|user|>", "red", "blue", "<|eot|>"]


# Responses with leading / trailing whitespace: mistral_common's v2+ encoders strip trailing spaces of assistant
# content (content.rstrip(" ")), v1 and Llama 3's ChatFormat keep it as it is.
WHITESPACE = ["  leading spaces", "trailing spaces  ", "  both  ", "\n newlines around \n", "tab\t", "ends in tab \t "]


def _reference_ids(name, conv, llama_ref):
    if name == "llama3":
        from llama_models.datatypes import RawMessage

        return llama_ref.encode_dialog_prompt([RawMessage(role=m["role"], content=m["content"]) for m in conv]).tokens
    return _mistral_encode(_mistral_ref(name), conv)


@pytest.mark.parametrize("name", ["llama3", "mistral-v1", "mistral-v3"])
@pytest.mark.parametrize("response", WHITESPACE, ids=repr)
def test_rows_with_whitespace_in_responses_match_the_reference_renderer(name, response, llama_ref):
    from rdpo_jax.data import PreferenceExample, tokenize_example

    tok = load_tokenizer(name)
    conv = [{"role": "user", "content": "  Q?  "}, {"role": "assistant", "content": response},
            {"role": "user", "content": "next"}]
    want = _reference_ids(name, conv, llama_ref)
    assert encode_chat(tok, conv, add_generation_prompt=True) == want
    # the scored chosen sequence [x][y_w] is the reference rendering up to and including the turn closer
    for which in ("chosen", "rejected"):
        ex, problems = tokenize_example(PreferenceExample("  Q?  ", response if which == "chosen" else "other",
                                                          "other" if which == "chosen" else response), tok)
        assert not problems
        seq = getattr(ex, which)
        assert seq.ids == want[: len(seq.ids)]
        assert seq.completion[-1] == tok.eos_token_id and want[len(seq.ids) - 1] == tok.eos_token_id
