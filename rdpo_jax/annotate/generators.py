"""Who writes (and checks) the rationales: a `Generator` answers a batch of chat requests with `Completion` s.

* :class:`EndpointGenerator`: an OpenAI-compatible endpoint through the project's endpoint client
  (:class:`rdpo_jax.eval.chat_client.ChatClient`: concurrency, retries, backoff, timeouts).
* :class:`LocalGenerator`: a local model through ``rdpo-jax generate``'s batched, length-bucketed,
  data-parallel path (:func:`rdpo_jax.eval.bulk_generation.generate_records`), with per-request PRNG keys
  derived from the request's key, so a sampled rationale does not depend on the batch it was drawn in.

``name`` and ``settings(max_tokens)`` identify the generator in cache keys and in every row's provenance;
``run`` calls ``on_done(key, completion)`` as each answer arrives (so it is cached before the next one is
awaited).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from rdpo_jax.eval.chat_client import ChatClient, Completion

__all__ = ["EndpointGenerator", "Generator", "LocalGenerator"]

Messages = Sequence[Mapping[str, str]]
OnDone = Callable[[str, Completion], None]


class Generator(Protocol):
    name: str

    def settings(self, max_tokens: int) -> dict[str, Any]: ...

    def run(self, work: Mapping[str, Messages], max_tokens: int, on_done: OnDone) -> None: ...


class EndpointGenerator:
    """Completions from a chat endpoint; ``temperature`` 0 (the default) is greedy."""

    def __init__(self, client: ChatClient, *, temperature: float = 0.0):
        self.client, self.temperature = client, float(temperature)
        self.name = f"endpoint:{client.model}"

    def settings(self, max_tokens: int) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": int(max_tokens)}

    def body(self, messages: Messages, max_tokens: int) -> dict[str, Any]:
        return self.client.body(messages, max_tokens=max_tokens, temperature=self.temperature)

    def run(self, work: Mapping[str, Messages], max_tokens: int, on_done: OnDone) -> None:
        bodies = {k: self.body(m, max_tokens) for k, m in work.items()}
        for key, completion in self.client.each(bodies, self.client.complete):
            on_done(key, completion)


class LocalGenerator:
    """Completions from a local `rdpo_jax.models` model and its tokenizer (greedy at ``temperature`` 0)."""

    def __init__(self, model, tokenizer, *, name: str, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, batch_size: int = 32, devices: Sequence[Any] | None = None):
        self.model, self.tokenizer, self.batch_size, self.devices = model, tokenizer, batch_size, devices
        self.name = f"local:{name}"
        self.temperature, self.top_p, self.seed = float(temperature), float(top_p), int(seed)

    def _sampling(self, max_tokens: int):
        from rdpo_jax.eval.bulk_generation import SamplingSettings

        return SamplingSettings(temperature=self.temperature, top_p=self.top_p, max_new_tokens=int(max_tokens),
                                seed=self.seed)

    def settings(self, max_tokens: int) -> dict[str, Any]:
        return self._sampling(max_tokens).as_dict()

    def run(self, work: Mapping[str, Messages], max_tokens: int, on_done: OnDone) -> None:
        from rdpo_jax.eval.bulk_generation import generate_records
        from rdpo_jax.eval.prompt_sources import PromptItem

        items = [PromptItem(key, [dict(m) for m in messages]) for key, messages in work.items()]
        if not items:
            return
        for records in generate_records(self.model, self.tokenizer, items, self._sampling(max_tokens),
                                        model_name=self.name, batch_size=self.batch_size, devices=self.devices):
            for r in records:
                on_done(r["prompt_id"], Completion(r["response"], "length" if r["finish_reason"] == "length"
                                                   else "stop"))
