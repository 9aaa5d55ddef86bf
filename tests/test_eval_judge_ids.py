"""Prompt ids: a string prompt and its one-user-message form share an id; the id is the documented hash."""
import hashlib

from rdpo_jax.eval.prompt_ids import prompt_id


def test_prompt_id_is_the_hash_of_the_canonical_messages():
    want = hashlib.sha256('[{"content":"héllo","role":"user"}]'.encode()).hexdigest()[:16]
    assert prompt_id("héllo") == want
    assert prompt_id([{"role": "user", "content": "héllo"}]) == want
    assert prompt_id([{"content": "héllo", "role": "user"}]) == want
    assert prompt_id("hello") != want and len(prompt_id("x")) == 16
