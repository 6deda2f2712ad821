"""A scripted OpenAI-compatible /v1/chat/completions server on 127.0.0.1 (ephemeral port) for tests.

`handle(body)` (by default the `reply` given) returns the assistant's text, or an int for an HTTP
error status. Every request body is kept in `requests`."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class ChatServer:
    def __init__(self, reply: Callable[[dict], str | int] = lambda body: ""):
        self.reply = reply
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                out = owner.handle(body, self.headers.get("Authorization"))
                status, payload = (out, {"error": "boom"}) if isinstance(out, int) else (
                    200, {"choices": [{"message": {"role": "assistant", "content": out}}]})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def handle(self, body: dict, auth: str | None) -> str | int:
        self.requests.append({**body, "auth": auth})
        return self.reply(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
