"""The ``kgglm`` command line. Each sub-command lives in the module that owns its feature."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgglm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from kgglm.data import commands as data_commands

    data_commands.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.extra = extra
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
