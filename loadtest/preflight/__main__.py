"""``python -m loadtest.preflight [options]``: the same as ``loadtest preflight [options]``."""

from __future__ import annotations

import argparse
import logging
import sys

from loadtest.preflight.command import add_preflight_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.preflight")
    sub = parser.add_subparsers(dest="command", required=True)
    add_preflight_command(sub)
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] != "preflight":
        args_in.insert(0, "preflight")
    args = parser.parse_args(args_in)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
