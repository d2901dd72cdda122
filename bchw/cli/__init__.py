"""The ``bchw`` command: ``bchw train | export | eval | random | generate | cosim |
estimate | sweep-bits | demo``, each with ``--help``.

One thin module per command turns its arguments into the options of a library function, calls
it and prints; :mod:`bchw.cli.common` holds what they share. Every command prints
human-readable lines; ``--json`` adds one JSON object as the last line of stdout. Errors are
one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys

from bchw import __version__
from bchw.cli import (
    cosim,
    demo,
    estimate,
    evaluate,
    export,
    generate,
    random_model,
    sweep_bits,
    train,
)
from bchw.cli.common import EPILOG, Parser
from bchw.errors import BchwError, first_line

COMMANDS = (train, export, evaluate, random_model, generate, cosim, estimate, sweep_bits, demo)


def build_parser() -> Parser:
    parser = Parser(
        prog="bchw",
        description="BinaryConnect networks to verified, multiplier-free FPGA hardware.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"bchw {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except BchwError as exc:
        print(f"bchw: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bchw: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (``bchw ... | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if os.environ.get("BCHW_DEBUG"):
            raise
        print(
            f"bchw: error: unexpected {type(exc).__name__}: {first_line(exc, 200)} "
            "(set BCHW_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
