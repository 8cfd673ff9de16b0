"""The ``cryorestore`` command line: one subcommand per module ``cryorestore.cli.cmd_<name>``.

Each command module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are discovered, so adding a command is adding one file.
Bad input raises :class:`cryorestore.errors.InputError`; it is reported as one line on stderr
and the process exits with status 2 (argparse's own usage errors exit 2 as well).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

from cryorestore import __version__
from cryorestore.errors import InputError


def command_modules() -> list[ModuleType]:
    """All command modules, sorted by subcommand name."""
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("cmd_"):
            mods.append(importlib.import_module(f"{__name__}.{info.name}"))
    return sorted(mods, key=lambda m: m.NAME)


class OneLineErrorParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (plus a pointer to --help), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="cryorestore",
        description="Restore noisy cryo-ET tomograms (denoising, missing-wedge compensation) and measure what the restoration kept.",
    )
    parser.add_argument("--version", action="version", version=f"cryorestore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for mod in command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        print(f"cryorestore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cryorestore {args.command}: interrupted", file=sys.stderr)
        return 130
