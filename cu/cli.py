"""`aocu` command line: each area registers its own subcommands (see COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules exposing `register(subparsers)`; each adds its subcommands and sets `func` on its parsers.
# Imported lazily so a broken optional area (e.g. no native build yet) does not break unrelated commands.
COMMAND_MODULES: tuple[str, ...] = (
    "cu.engine.cli",
    "cu.codec.cli",
    "attestation.cli",
    "cu.verify.cli",
    "attestation.measure_cli",
    "cu.serve.cli",
)
NATIVE_MODULE = "cu._native"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aocu", description="TEE-attested compute unit for AO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name == name:  # area not present in this build
                continue
            if not _native_available():  # needs the C++ extension: a pure-Python install still has `aocu verify`
                continue
            raise
        module.register(sub)
    return parser


def _native_available() -> bool:
    try:
        importlib.import_module(NATIVE_MODULE)
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
