"""A real chat-completions server for the judge tests (http.server in a thread on 127.0.0.1). By default it
answers "1" if Response 1 holds GOOD, "2" if Response 2 does, "I cannot say" if either holds UNSURE, else
"tie"; ``script`` queues behaviours for the next requests: "429" (with Retry-After), "500", "slow" (sleeps
past the client's timeout), "malformed" (a body that is not JSON). ``bodies`` records every request body."""
from __future__ import annotations

import collections
import http.server
import json
import re
import threading
import time


class JudgeServer:
    def __init__(self, delay: float = 0.0, retry_after: str = "0.05", slow_s: float = 0.5):
        self.script: collections.deque[str] = collections.deque()
        self.bodies: list[str] = []
        self.delay, self.retry_after, self.slow_s = delay, retry_after, slow_s
        self.times: list[float] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with server.lock:
                    server.bodies.append(body)
                    server.times.append(time.monotonic())
                    action = server.script.popleft() if server.script else "answer"
                try:
                    server.respond(self, action, json.loads(body))
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def respond(self, h, action, body):
        if action == "429":
            return self._send(h, 429, b"{}", {"Retry-After": self.retry_after})
        if action == "500":
            return self._send(h, 500, b"oops")
        if action == "slow":
            time.sleep(self.slow_s)
        if action == "malformed":
            return self._send(h, 200, b'{"choices": [')
        time.sleep(self.delay)
        text = body["messages"][0]["content"]
        one = re.search(r"Response 1:\n(.*?)\nEND OF RESPONSE 1", text, re.S).group(1)
        two = re.search(r"Response 2:\n(.*?)\nEND OF RESPONSE 2", text, re.S).group(1)
        answer = "I cannot say" if "UNSURE" in one + two else "Reason.\n1" if "GOOD" in one else \
            "Reason.\n2" if "GOOD" in two else "tie"
        self._send(h, 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode())

    @staticmethod
    def _send(h, status, payload, headers=None):
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(payload)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
