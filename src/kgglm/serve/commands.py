"""The ``serve`` sub-command: ``add_parser`` for the ``kgglm`` parser and a standalone ``serve_main``.

Nothing heavy is imported here, so ``kgglm --help`` works without the ``serve`` extra installed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kgglm.errors import user_errors

KEEP_ALIVE_SECONDS = 30


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
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    engine = Engine(args.checkpoint, data_path=args.data_path, threads=args.threads)
    app = create_app(engine, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    print(f"kgglm serve: {engine.info.model} on {engine.info.dataset} loaded in {engine.info.load_seconds:.1f}s; "
          f"http://{args.host}:{args.port}/", flush=True)
    # keep-alive 30 s rather than uvicorn's 5: under load a client's pooled connection could be closed
    # by the server just as the client reuses it (a ReadError for a request that was never read)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_keep_alive=KEEP_ALIVE_SECONDS)
    return 0


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
