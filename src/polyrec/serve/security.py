"""API-key checks for writes and a request-size limit.

Keys are sent as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` and checked against the
SHA-256 hashes in the store (:func:`polyrec.serve.store.hash_key`); the store never holds a key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request

from polyrec.serve.store import Store

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


def presented_key(request: Request) -> str | None:
    """The API key of a request, from ``X-API-Key`` or a bearer token."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def require_api_key(store: Store) -> Callable[[Request], None]:
    """A FastAPI dependency answering 401 without a key and 403 with a wrong one."""

    def check(request: Request) -> None:
        key = presented_key(request)
        if key is None:
            raise HTTPException(
                401,
                "missing API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not store.check_api_key(key):
            raise HTTPException(403, "invalid API key")

    return check


class BodySizeLimit:
    """ASGI middleware answering 413 to a request body over ``max_bytes``, whether it
    announces its length or streams it in chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
        received = 0
        over = False  # the body passed the limit before the app answered
        answered = False

        async def limited_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request" and not answered:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # the app gets an empty, final body instead of an exception, which
                    # FastAPI's body reader would turn into its own 400
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def answering_send(message: Message) -> None:
            nonlocal answered
            if over and not answered:
                answered = True
                await _too_large(send, self.max_bytes)
            if over:
                return  # the app's answer to the emptied body is dropped
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, answering_send)


async def _too_large(send: Any, limit: int) -> None:
    body = f'{{"error":"request body larger than {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
