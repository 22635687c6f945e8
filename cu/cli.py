"""`aocu` command line: each area registers its own subcommands (see COMMAND_MODULES).

Errors: a command that fails raises (SystemExit with a message, OSError, ValueError and its subclasses such as
CodecError / PolicyError, IdentityError, CoreError, ...); `main` prints one line `aocu: error: ...` on stderr
and exits 1. A closed stdout (`aocu ... | head`) ends quietly with 141, like a process killed by SIGPIPE.
`aocu --debug ...` or AOCU_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

# Modules exposing `register(subparsers)`; each adds its subcommands and sets `func` on its parsers.
# Imported lazily so a broken optional area (e.g. no native build yet) does not break unrelated commands.
COMMAND_MODULES: tuple[str, ...] = (
    "cu.engine.cli",
    "cu.codec.cli",
    "cu.codec.publish",
    "attestation.cli",
    "attestation.seal_cli",
    "cu.node.keys_cli",
    "cu.verify.cli",
    "cu.verify.processes",
    "attestation.measure_cli",
    "attestation.fetch_cli",
    "cu.serve.cli",
)
NATIVE_MODULE = "cu._native"

EXIT_ERROR = 1
EXIT_BROKEN_PIPE = 128 + 13   # what a shell reports for a process killed by SIGPIPE
EXIT_INTERRUPTED = 128 + 2

# Error types whose message is meant for the user as it is; any other exception is shown with its type name.
_EXPECTED = {"OSError", "ValueError", "CodecError", "PolicyError", "ParseError", "AttestationError",
             "IdentityError", "CoreError", "EngineError", "ModuleError", "RuntimeError", "TimeoutError"}
_PREFIX = re.compile(r"^aocu(?: [\w-]+)*: (?:error: )?")


def version_line() -> str:
    """`aocu --version`: the installed package's version, and the wasmtime the native engine loaded."""
    import importlib.metadata
    try:
        version = importlib.metadata.version("aocu")
    except importlib.metadata.PackageNotFoundError:   # a source tree that was never installed
        from cu import __version__ as version
    try:
        from cu.engine.native import WASMTIME_VERSION  # importing it loads the engine (and checks wasmtime)
        engine = f"native engine: wasmtime {WASMTIME_VERSION}"
    except Exception as exc:  # noqa: BLE001 - any reason the engine did not load is reported, not raised
        engine = f"no native engine: {' '.join(str(exc).split()) or type(exc).__name__}"
    return f"aocu {version} ({engine})"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aocu", description="TEE-attested compute unit for AO")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also: AOCU_DEBUG=1)")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version (and the native engine's wasmtime version) and exit")
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


def error_line(exc: BaseException) -> str:
    """The one line `aocu` prints for an error: `aocu: error: <message>`."""
    if isinstance(exc, SystemExit):
        msg = str(exc.code)
    elif isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        msg = f"{exc.filename}: {exc.strerror}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    elif isinstance(exc, OSError) and exc.strerror:
        msg = exc.strerror
    else:
        text = str(exc.args[0]) if len(exc.args) == 1 else str(exc)
        expected = any(t.__name__ in _EXPECTED for t in type(exc).__mro__)
        msg = text if expected and text else f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    msg = _PREFIX.sub("", " ".join(msg.split()))   # one line, one "aocu: error:" prefix
    return f"aocu: error: {msg}"


def _debug(argv: list[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return os.environ.get("AOCU_DEBUG", "") not in ("", "0") or "--debug" in args[:1]


def _quiet_stdout() -> None:
    """stdout is gone (`| head`): point it at /dev/null so the interpreter's final flush cannot fail too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    debug = _debug(argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        code = int(args.func(args) or 0)
        sys.stdout.flush()   # a closed pipe shows up here, not at interpreter exit
        return code
    except SystemExit as exc:
        if debug or exc.code is None or isinstance(exc.code, int):
            raise          # argparse usage errors (2), --help (0), gunicorn's own exits: unchanged
        print(error_line(exc), file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if debug:
            raise
        return EXIT_INTERRUPTED
    except Exception as exc:   # noqa: BLE001 - the top level: one line instead of a traceback
        if debug:
            raise
        print(error_line(exc), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
