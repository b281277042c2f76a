"""A real HTTP server on 127.0.0.1 that speaks the Telegram Bot API's `sendMessage`.

It checks what Telegram checks (the token, the chat, the length, HTML markup with only the tags
Telegram knows and every `&` and `<` escaped) and answers in Telegram's shapes, so the client's
wire behaviour (status codes, `retry_after`, error descriptions) is exercised for real. Scripted
`Answer`s are consumed in arrival order (by the requests they name) before the normal reply."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "123456:TEST-token-not-real"
CHAT_ID = "-100777"
_TAGS = {"b", "strong", "i", "em", "u", "s", "a", "code", "pre", "blockquote", "tg-spoiler"}


@dataclass(frozen=True)
class Answer:
    """A scripted failure: this HTTP status, Telegram's error body, optionally `retry_after`;
    for the next request whose text contains `text` (any request if None)."""

    status: int
    retry_after: int | None = None
    text: str | None = None


@dataclass(frozen=True)
class Message:
    """A message the server accepted."""

    chat_id: str
    text: str
    parse_mode: str | None
    received: float = field(default_factory=time.time)


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.open: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _TAGS:
            self.error = f'unsupported start tag "{tag}"'
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.error = f'unexpected end tag "{tag}"'


def markup_error(text: str) -> str | None:
    """What Telegram would refuse in this HTML text, or None."""
    if re.search(r"&(?!(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)", text):
        return 'unescaped "&"'
    if re.search(r"<(?![a-zA-Z/])", text):
        return 'unescaped "<"'
    parser = _Markup()
    parser.feed(text)
    parser.close()
    if parser.error is None and parser.open:
        return f'can\'t find end tag "{parser.open[-1]}"'
    return parser.error


class TelegramServer:
    """Use as a context manager; `base_url` goes into TELEGRAM_API_BASE."""

    def __init__(self, token: str = TOKEN, chats: Iterable[str] = (CHAT_ID,)) -> None:
        self.token, self.chats = token, set(chats)
        self.messages: list[Message] = []
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def script(self, answers: Iterable[Answer]) -> None:
        with self._lock:
            self._script.extend(answers)

    def texts(self) -> list[str]:
        with self._lock:
            return [m.text for m in self.messages]

    def __enter__(self) -> TelegramServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _reply(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append({"path": path, "received": time.time(), **body})
            answer = next(
                (a for a in self._script if a.text is None or a.text in body.get("text", "")), None
            )
            if answer is not None:
                self._script.remove(answer)
                error: dict[str, Any] = {"ok": False, "error_code": answer.status}
                if answer.retry_after is not None:
                    error["description"] = f"Too Many Requests: retry after {answer.retry_after}"
                    error["parameters"] = {"retry_after": answer.retry_after}
                else:
                    error["description"] = "Internal Server Error"
                return answer.status, error
        if path != f"/bot{self.token}/sendMessage":
            code = 404 if path.endswith("/sendMessage") else 400
            return code, {"ok": False, "error_code": code, "description": "Not Found"}
        chat, text = str(body.get("chat_id", "")), body.get("text") or ""
        if chat not in self.chats:
            return 400, _bad("chat not found")
        if not text:
            return 400, _bad("message text is empty")
        if len(text) > 4096:
            return 400, _bad("message is too long")
        if body.get("parse_mode") == "HTML" and (problem := markup_error(text)):
            return 400, _bad(f"can't parse entities: {problem}")
        message = Message(chat, text, body.get("parse_mode"))
        with self._lock:
            self.messages.append(message)
            number = len(self.messages)
        return 200, {
            "ok": True,
            "result": {"message_id": number, "chat": {"id": chat}, "text": text},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                status, answer = server._reply(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: pytest shows failures, not access logs

        return Handler


def _bad(what: str) -> dict[str, Any]:
    return {"ok": False, "error_code": 400, "description": f"Bad Request: {what}"}
