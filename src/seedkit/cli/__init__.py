"""The ``seedkit`` command line.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit code). Listing the module in
:data:`COMMAND_MODULES` is all it takes to add a command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import seedkit
from seedkit.errors import SeedkitError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: The modules of the subcommands; each has ``add_parser(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = (
    "seedkit.cli.eval_seeds",
    "seedkit.cli.viz",
    "seedkit.cli.make_cls_labels",
    "seedkit.cli.make_demo_data",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="seedkit",
        description="USAGE seed generation for weakly supervised semantic segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"seedkit {seedkit.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _command_names(parser: argparse.ArgumentParser) -> list[str]:
    """The subcommand names of a parser built by :func:`build_parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Errors that seedkit raises on purpose (bad files, shapes, values) print one
    line on stderr and exit with status 2 instead of a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        # As git and pip do: a command is required; say so on stderr, exit status 2.
        parser.print_usage(sys.stderr)
        print(
            "seedkit: error: a command is required "
            f"(one of {', '.join(_command_names(parser))}; seedkit --help lists them)",
            file=sys.stderr,
        )
        return 2
    try:
        return int(args.func(args) or 0)
    except SeedkitError as error:
        print(f"seedkit {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
