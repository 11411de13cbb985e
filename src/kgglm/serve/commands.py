"""The ``serve`` sub-command: ``add_parser`` for the ``kgglm`` parser and a standalone ``serve_main``.

Nothing heavy is imported here, so ``kgglm --help`` works without the ``serve`` extra installed.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from kgglm.errors import user_errors

API_KEY_ENV = "KGGLM_API_KEY"


def _add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint (or run) directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--data-path", default=None, help="folder holding the dataset (if it moved)")
    p.add_argument("--max-batch", type=int, default=32, help="most users decoded together (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to batch with (default 5 ms)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads of the batched search (default: all cores but one, which the "
                        "event loop keeps for HTTP and JSON; 1 on a 2-core machine)")
    p.add_argument("--api-key", default=None, metavar="TOKEN",
                   help=f"bearer token every endpoint but /health needs (default: ${API_KEY_ENV}, else none)")
    p.add_argument("--allowed-hosts", default=None, metavar="NAMES",
                   help="comma-separated Host header names accepted (default: loopback names and --host; "
                        "'*' accepts any, e.g. behind a proxy that checks it)")
    p.add_argument("--insecure-public", action="store_true",
                   help="allow a non-loopback --host without an API key (anyone who can reach it may use it)")
    p.add_argument("--docs", action="store_true", help="serve /docs (its page loads assets from a CDN)")
    p.add_argument("--max-connections", type=int, default=256,
                   help="connections and requests at once, 503 beyond (default 256)")
    p.add_argument("--request-timeout", type=float, default=10.0,
                   help="seconds a request's header and body may take to arrive (default 10)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` sub-command to the ``kgglm`` parser."""
    p = subparsers.add_parser("serve", help="HTTP API and explorer page for explained recommendations",
                              description="Serve explained recommendations from a checkpoint over HTTP "
                                          "(JSON API, OpenAPI at /docs, explorer page at /).")
    return _add_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint once, then serve until interrupted."""
    try:
        import uvicorn

        from kgglm.serve.app import create_app
        from kgglm.serve.engine import Engine
    except ModuleNotFoundError as exc:
        print(f"kgglm serve: error: {exc.name} is not installed; pip install 'kgglm[serve]'", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    hosts = allowed_hosts(args.host, args.allowed_hosts)
    if not is_loopback(args.host) and not api_key and not args.insecure_public:
        print(f"kgglm serve: error: --host {args.host} is reachable from other machines: set --api-key (or "
              f"${API_KEY_ENV}), or pass --insecure-public to serve it without one", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    from kgglm.serve.server import uvicorn_settings

    engine = Engine(args.checkpoint, data_path=args.data_path, threads=args.threads)
    app = create_app(engine, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, api_key=api_key,
                     allowed_hosts=hosts, docs=args.docs)
    print(f"kgglm serve: {engine.info.model} on {engine.info.dataset} loaded in {engine.info.load_seconds:.1f}s; "
          f"http://{args.host}:{args.port}/", flush=True)
    # keep-alive 30 s rather than uvicorn's 5: under load a client's pooled connection could be closed
    # by the server just as the client reuses it (a ReadError for a request that was never read)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                **uvicorn_settings(request_timeout=args.request_timeout, limit_concurrency=args.max_connections))
    return 0


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or name) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, option: str | None) -> list[str]:
    """The Host header names accepted: ``option`` (comma-separated), else the loopback names plus
    ``host`` unless it is a wildcard address (then any name: the API key guards such a server)."""
    if option:
        return [h.strip() for h in option.split(",") if h.strip()]
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return list(dict.fromkeys(["127.0.0.1", "localhost", "::1", host]))


def serve_main(argv: list[str] | None = None) -> int:
    """``kgglm serve`` without the main parser (``python -m kgglm.serve``)."""
    args = _add_arguments(argparse.ArgumentParser(prog="kgglm serve", allow_abbrev=False)).parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"kgglm serve: error: {exc}", file=sys.stderr)
        return 2
