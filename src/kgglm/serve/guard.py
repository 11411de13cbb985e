"""The server's defences at the ASGI level: body limit, body read timeout, bearer token, headers.

:class:`Guard` wraps the FastAPI app (inside Starlette's ``TrustedHostMiddleware``, which
:func:`kgglm.serve.app.create_app` adds for the Host check):

* a request body over ``max_body_bytes`` answers 413 (by ``Content-Length`` before reading, or while
  a chunked body streams in); a body that stalls for ``body_timeout`` seconds answers 408;
* with an ``api_key``, every path but ``/health`` needs ``Authorization: Bearer <key>`` (compared in
  constant time, :func:`hmac.compare_digest`), else 401;
* every response carries ``Content-Security-Policy`` (same-origin only, no framing),
  ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer``.

Timeouts of the HTTP layer itself (header read, idle keep-alive) and the connection bound are
uvicorn settings: :mod:`kgglm.serve.server`.
"""

from __future__ import annotations

import asyncio
import hmac
import json

from starlette.exceptions import HTTPException

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a batch of 256 users of 200 characters is ~60 KB
BODY_TIMEOUT_SECONDS = 10.0
OPEN_PATHS = frozenset({"/health"})
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
     b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class Guard:
    """ASGI middleware enforcing the limits, the token and the headers of the module docstring."""

    def __init__(self, app, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                 body_timeout: float = BODY_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = int(max_body_bytes)
        self.body_timeout = float(body_timeout)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in SECURITY_HEADERS if h[0] not in names)]}
            await send(message)

        headers = dict(scope.get("headers") or [])
        try:
            self._check_token(scope["path"], headers.get(b"authorization", b""))
            self._check_length(headers.get(b"content-length"))
            await self.app(scope, self._limited(receive), send_with_headers)
        except _Refused as refused:
            await _answer(send_with_headers, refused.status, refused.detail,
                          [(b"www-authenticate", b"Bearer")] if refused.status == 401 else [])

    def _check_token(self, path: str, authorization: bytes) -> None:
        if self.api_key is None or path in OPEN_PATHS:
            return
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
            raise _Refused(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    def _check_length(self, length: bytes | None) -> None:
        if length is None:
            return
        if not length.isdigit():
            raise _Refused(400, "invalid Content-Length")
        if int(length) > self.max_body_bytes:
            raise _Refused(413, f"request body over {self.max_body_bytes:,} bytes")

    def _limited(self, receive):
        """``receive`` with the body limit and the body timeout, raised as HTTPException inside the app
        (its exception handlers answer them); once the body is complete, ``receive`` as it was."""
        total, complete = 0, False

        async def limited_receive():
            nonlocal total, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                raise HTTPException(408, f"request body not received within {self.body_timeout:g} s",
                                    headers={"connection": "close"}) from None
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if total > self.max_body_bytes:
                    raise HTTPException(413, f"request body over {self.max_body_bytes:,} bytes",
                                        headers={"connection": "close"})
            return message

        return limited_receive


async def _answer(send, status: int, detail: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})
