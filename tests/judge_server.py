"""The judge tests' chat-completions server (:class:`tests.chat_server.ChatServer`): it answers "1" if
Response 1 holds GOOD, "2" if Response 2 does, "I cannot say" if either holds UNSURE, else "tie"."""
from __future__ import annotations

import re

from tests.chat_server import ChatServer


class JudgeServer(ChatServer):
    def answer(self, body):
        text = body["messages"][0]["content"]
        one = re.search(r"Response 1:\n(.*?)\nEND OF RESPONSE 1", text, re.S).group(1)
        two = re.search(r"Response 2:\n(.*?)\nEND OF RESPONSE 2", text, re.S).group(1)
        return "I cannot say" if "UNSURE" in one + two else "Reason.\n1" if "GOOD" in one else \
            "Reason.\n2" if "GOOD" in two else "tie"
