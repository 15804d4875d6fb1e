"""A real HTTP server on 127.0.0.1 that receives webhook POSTs, for the alert and canary tests."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    """Records the path and raw body of each POST and answers with ``status`` (settable)."""

    def __init__(self, token: str) -> None:
        receiver = self
        self.posts: list[tuple[str, bytes]] = []
        self.status = 200

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.posts.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:  # the request line carries the token
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?token={token}"
        self.thread = threading.Thread(
            target=lambda: self.server.serve_forever(poll_interval=0.05), daemon=True
        )
        self.thread.start()

    @property
    def received(self) -> list[tuple[str, dict]]:
        """The POSTs with their JSON bodies parsed."""
        return [(path, json.loads(body)) for path, body in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
