"""A real chat-completions server for the endpoint tests (http.server in a thread on 127.0.0.1).

``answer(body)`` (override) returns the reply text, or ``(text, finish_reason)``; ``script`` queues
behaviours for the next requests: "429" (with Retry-After), "500", "slow" (sleeps past the client's
timeout), "malformed" (a body that is not JSON). ``bodies`` records every request body (as text)."""
from __future__ import annotations

import collections
import http.server
import json
import signal
import subprocess
import threading
import time


class ChatServer:
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

    def answer(self, body: dict) -> str | tuple[str, str]:
        raise NotImplementedError

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
        reply = self.answer(body)
        text, reason = reply if isinstance(reply, tuple) else (reply, "stop")
        choice = {"message": {"role": "assistant", "content": text}, "finish_reason": reason}
        self._send(h, 200, json.dumps({"choices": [choice]}).encode())

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


def kill_when_busy(cmd, env, server: ChatServer, requests: int, timeout: float = 60.0) -> None:
    """Runs ``cmd`` and SIGKILLs it as soon as ``server`` has seen ``requests`` requests (or it exits, or
    ``timeout`` seconds pass): a kill mid-run, with requests in flight."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while len(server.bodies) < requests and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
