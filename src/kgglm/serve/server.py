"""uvicorn settings of ``kgglm serve``, and the app run in a background thread (tests, benchmarks).

:func:`uvicorn_settings` bounds what one client can hold: a request's header and body must arrive
within ``request_timeout`` seconds of its first byte (or of the connection), an idle keep-alive
connection closes after ``keep_alive`` seconds, at most ``limit_concurrency`` connections and
requests at once (503 beyond), request headers at most ``MAX_HEADER_BYTES``. uvicorn times out
neither a connection that never sends nor a request whose headers drip in byte by byte, so
:class:`GuardedHttpToolsProtocol` adds that timer to its httptools protocol.

``with running(app) as url:`` starts a real uvicorn server on a free loopback port, waits until it
accepts connections, yields its base URL and shuts it down on exit.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

REQUEST_TIMEOUT_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 30
LIMIT_CONCURRENCY = 256
MAX_HEADER_BYTES = 64 * 1024


def _protocol_class(request_timeout: float, max_header_bytes: int):
    """uvicorn's httptools protocol with a deadline for each request's header and body."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline = None
        _header_bytes = 0

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(request_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()  # a connection that never sends a request

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            self._header_bytes = 0
            self._arm()
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def _count(self, n: int) -> None:
            self._header_bytes += n
            if self._header_bytes > max_header_bytes:
                raise ValueError("request header too large")  # httptools: a parser error, uvicorn answers 400

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

    return GuardedHttpToolsProtocol


def uvicorn_settings(*, request_timeout: float = REQUEST_TIMEOUT_SECONDS, keep_alive: int = KEEP_ALIVE_SECONDS,
                     limit_concurrency: int = LIMIT_CONCURRENCY, max_header_bytes: int = MAX_HEADER_BYTES) -> dict:
    """Keyword arguments of ``uvicorn.Config``/``uvicorn.run`` bounding slow, idle and many clients."""
    settings = {"timeout_keep_alive": keep_alive, "limit_concurrency": limit_concurrency,
                "h11_max_incomplete_event_size": max_header_bytes}
    try:
        settings["http"] = _protocol_class(request_timeout, max_header_bytes)
    except ImportError:  # no httptools: h11 bounds the header size, not the time it takes
        settings["http"] = "h11"
    return settings


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0, **limits) -> Iterator[str]:
    """Serve ``app`` in a thread (with :func:`uvicorn_settings` of ``limits``); yield ``http://host:port``;
    stop the server when the block ends."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            **uvicorn_settings(**limits))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kgglm-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.01)
    sockets = [s for srv in server.servers for s in srv.sockets]
    bound = sockets[0].getsockname()[1] if sockets else port
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)
