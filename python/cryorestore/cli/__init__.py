"""The ``cryorestore`` command line: one subcommand per module ``cryorestore.cli.cmd_<name>``.

Each command module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are discovered, so adding a command is adding one file.
Bad input raises :class:`cryorestore.errors.InputError`; it is reported as one line on stderr
and the process exits with status 2 (argparse's own usage errors exit 2 as well).

A command module may also define ``OUTPUT_ARGS``: the names of its arguments that are output paths
(folders or files). The dispatcher holds the lock of each (:func:`cryorestore.outputs.lock`: a second
run into one of them exits 2 naming the holder) and cleans up what killed runs left there. For every
command: SIGTERM/SIGINT stop it with one line saying what was kept and exit 143/130; a disk error on
an output (no space, quota, read-only, permission) is one line and exit 2 (see :mod:`cryorestore.outputs`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
from types import ModuleType

from cryorestore import __version__, outputs
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
        p.set_defaults(_run=mod.run, _outputs=tuple(getattr(mod, "OUTPUT_ARGS", ())))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    paths = [str(p) for name in args._outputs if (p := getattr(args, name, None))]
    if os.environ.get("RANK", "0") != "0":
        paths = []  # a torchrun rank > 0: rank 0 holds the locks and writes
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    outputs.reset()
    outputs.install_signal_handlers()
    try:
        with outputs.lock(paths, " ".join(["cryorestore", *(sys.argv[1:] if argv is None else argv)])):
            return int(args._run(args) or 0)
    except InputError as exc:
        print(f"cryorestore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = f"by {exc.args[0]}" if isinstance(exc, outputs.Stopped) else "by an interrupt"
        print(f"cryorestore {args.command}: stopped {how}; {outputs.kept_line()}", file=sys.stderr, flush=True)
        return outputs.stop_exit_code(exc)
    except OSError as exc:
        line = outputs.os_error_line(exc)
        if line is None:
            raise
        print(f"cryorestore {args.command}: error: {line}", file=sys.stderr)
        return 2
    finally:
        for sig, h in handlers.items():
            if h is not None:
                signal.signal(sig, h)
