"""The annotation tests' chat-completions server (:class:`tests.chat_server.ChatServer`).

Every response text in the tests names one topic word (``topicNNa`` in chosen, ``topicNNb`` in rejected).
* Rationale requests (the ``told`` templates): the rationale names the chosen response's topic, unless
  the chosen text holds a marker: EMPTY (empty text), REFUSE (a refusal), WRONG (names the rejected topic),
  TRUNC (a normal rationale with finish reason "length"), POSITION ("Response A is better.").
* Blind requests (``--both-orders``): ``Better: N`` for the response holding GOOD (``biased``: always 1),
  then a rationale naming its topic.
* Support checks: the number of the response whose topic the explanation names, else "tie".
"""
from __future__ import annotations

import re

from tests.chat_server import ChatServer

TOPIC = re.compile(r"topic\w+")


def _between(text, start, end):
    return re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.S).group(1)


def rationale_for(topic):
    """The server's rationale for a response about ``topic``."""
    return f"The preferred response is better because it explains {topic} with care, unlike the other response."


class AnnotateServer(ChatServer):
    def __init__(self, *a, biased=False, **kw):
        super().__init__(*a, **kw)
        self.biased = biased

    def answer(self, body):
        text = body["messages"][0]["content"]
        if "Someone wrote this explanation" in text:
            one, two = _between(text, "Response 1:", "END OF RESPONSE 1"), _between(text, "Response 2:",
                                                                                   "END OF RESPONSE 2")
            named = TOPIC.findall(_between(text, "about the two responses:", "END OF EXPLANATION"))
            for n, response in ((1, one), (2, two)):
                if named and named[0] in response:
                    return f"It talks about {named[0]}.\n{n}"
            return "Neither.\ntie"
        if "Preferred response:" in text:
            chosen = _between(text, "Preferred response:", "END OF PREFERRED RESPONSE")
            rejected = _between(text, "Other response:", "END OF OTHER RESPONSE")
            if "EMPTY" in chosen:
                return "   "
            if "REFUSE" in chosen:
                return "I'm sorry, but I can't help with that."
            if "POSITION" in chosen:
                return "Response A is better."
            if "WRONG" in chosen:
                return rationale_for(TOPIC.search(rejected).group(0))
            if "TRUNC" in chosen:
                return rationale_for(TOPIC.search(chosen).group(0)), "length"
            return rationale_for(TOPIC.search(chosen).group(0))
        one = _between(text, "Response 1:", "END OF RESPONSE 1")
        two = _between(text, "Response 2:", "END OF RESPONSE 2")
        pick = 1 if self.biased or "GOOD" in one else 2
        return f"Better: {pick}\n" + rationale_for(TOPIC.search(one if pick == 1 else two).group(0))
