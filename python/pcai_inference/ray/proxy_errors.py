"""OpenAI-shaped failures from Serve's HTTP proxy, where the replicas' app cannot answer.

When a replica dies holding a request, Serve's proxy answers on its own: a bare 500 with no
body before the response started, or a stream cut short after. Clients of OpenAI's API expect
``{"error": {...}}``: this middleware, installed in the proxy through Serve's
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` (``pcai_inference.ray.proxy_errors:proxy_middlewares``;
``pcai-inference serve --ray`` sets it), answers those with a 502 error body, ends a cut stream
with an error event and ``[DONE]``, and turns the proxy's plain-text errors (408 timeout, 429,
503 no replica) into error bodies with the same status.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..server.errors import error_body

__all__ = ["CALLBACK_ENV", "CALLBACK_PATH", "OpenAIShapedProxyErrors", "proxy_middlewares"]

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK_PATH = "pcai_inference.ray.proxy_errors:proxy_middlewares"

REPLICA_LOST = (
    "the replica serving this request stopped before it finished (Ray Serve replaces it); the request can be retried"
)


def _json_headers(length: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]


class OpenAIShapedProxyErrors:
    """Pure ASGI (streams pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, finished, streaming, client_gone = False, False, False, False
        held: dict[str, Any] = {}  # a plain-text error's start, until its body is read

        async def watching_receive() -> Message:
            nonlocal client_gone
            message = await receive()
            client_gone = client_gone or message["type"] == "http.disconnect"
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started, finished, streaming
            if message["type"] == "http.response.start":
                started = True
                headers = dict(message.get("headers", []))
                streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"text/plain"):
                    held.update(status=message["status"], headers=message.get("headers", []), body=b"")
                    return
            elif message["type"] == "http.response.body":
                finished = not message.get("more_body", False)
                if held:
                    held["body"] += message.get("body", b"")
                    if finished:
                        await self._send_error(send, held["status"], held["body"].decode("utf-8", "replace"), held)
                    return
            await send(message)

        with contextlib.suppress(Exception):  # the proxy logged it; the client still gets an answer
            await self.app(scope, watching_receive, watching_send)
        if client_gone or finished:
            return
        try:
            if not started:
                await self._send_error(send, 502, REPLICA_LOST, {}, code="replica_lost")
            elif streaming:
                event = json.dumps(error_body(502, REPLICA_LOST, code="replica_lost"))
                await send({"type": "http.response.body", "body": f"data: {event}\n\n".encode(), "more_body": True})
                await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        except OSError:  # the client left meanwhile
            pass

    @staticmethod
    async def _send_error(send: Send, status: int, message: str, held: dict[str, Any], code: str = "") -> None:
        body = json.dumps(error_body(status, message.strip() or "the request failed", code=code or None)).encode()
        # Keep the proxy's own headers (Retry-After on 429/503, X-Request-ID), but the body's.
        kept = [(k, v) for k, v in held.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
        await send({"type": "http.response.start", "status": status, "headers": [*kept, *_json_headers(len(body))]})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def proxy_middlewares() -> list[Middleware]:
    """Serve's proxy callback: the middlewares it wraps its app in."""
    return [Middleware(OpenAIShapedProxyErrors)]
