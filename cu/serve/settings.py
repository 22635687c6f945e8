"""Every `aocu serve` flag from a TOML file (`--config FILE`) or an environment variable (`AOCU_<FLAG>`).

Precedence: a flag on the command line > AOCU_<FLAG> > the file > the flag's default. Derived from the parser's
own actions, so a flag added to cu/serve/cli.py is settable both ways with no further code:

- file key: the long flag name without `--` (`data-dir`, `max-warm`; `data_dir` too); an unknown key is an
  error naming it. TOML strings, numbers and booleans; a list for a repeatable flag.
- environment: `AOCU_` + the flag name in upper case with `_` for `-` (AOCU_DATA_DIR, AOCU_MAX_WARM); on/off
  flags take 1/true/yes/on or 0/false/no/off; a repeatable flag takes a comma-separated list. An empty value
  counts as unset.
- values go through the flag's own argparse type function and choices, as a command-line value would.

`attach(parser)` makes parsing record which flags were given on the command line (the parser's flags are read
when parsing, so flags added after `attach` count too); `resolve(args)` then fills in the others from the
environment and the file."""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "AOCU_"
CONFIG_DEST = "config"
_GIVEN = "_settings_given"
_PARSER = "_settings_parser"
_SET = "_settings_set"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)
_NOT_SETTINGS = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


class SettingsError(SystemExit):
    """A bad config file or environment value (a SystemExit: cu.cli prints the one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"aocu serve: {message}")


def flag_name(action: argparse.Action) -> str | None:
    """The long flag name without `--` (None: an action without one, such as a positional)."""
    return next((o[2:] for o in action.option_strings if o.startswith("--")), None)


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.upper().replace("-", "_")


def settings_of(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    """(flag name, action) of every flag that a file or the environment may set."""
    for action in parser._actions:
        name = flag_name(action)
        if name is not None and not isinstance(action, _NOT_SETTINGS) and action.dest != CONFIG_DEST:
            yield name, action


def attach(parser: argparse.ArgumentParser) -> None:
    """Makes `parser` note, in the namespace it returns, which flags the command line gave."""
    original: Callable[..., tuple[argparse.Namespace, list[str]]] = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = original(args, namespace)
        setattr(ns, _GIVEN, _given(parser, original, args))
        setattr(ns, _PARSER, parser)
        return ns, rest

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _given(parser: argparse.ArgumentParser, parse: Callable[..., Any], args: Any) -> frozenset[str]:
    """Dests set by the command line: the same arguments parsed again with every default suppressed."""
    saved = [(a, a.default) for a in parser._actions]
    saved_defaults = dict(parser._defaults)
    try:
        for a in parser._actions:
            a.default = argparse.SUPPRESS
        parser._defaults.clear()
        ns, _ = parse(list(args) if args is not None else None, None)
    finally:
        for a, d in saved:
            a.default = d
        parser._defaults.update(saved_defaults)
    return frozenset(vars(ns))


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Fills every flag the command line did not give from AOCU_<FLAG>, else from the config file (--config or
    AOCU_CONFIG). Returns {dest: source} of the values taken from either."""
    parser: argparse.ArgumentParser | None = getattr(args, _PARSER, None)
    given: frozenset[str] = getattr(args, _GIVEN, frozenset())
    if parser is None:
        return {}       # not parsed by an attached parser (a Namespace made in code): nothing to fill in
    env = os.environ if environ is None else environ
    config = getattr(args, CONFIG_DEST, None) or env.get(ENV_PREFIX + CONFIG_DEST.upper()) or None
    file_values = _read_file(Path(config), parser) if config else {}
    sources: dict[str, str] = {}
    for name, action in settings_of(parser):
        if action.dest in given:
            continue
        raw_env = env.get(env_name(name), "")
        if raw_env.strip():
            source = env_name(name)
            setattr(args, action.dest, _convert(action, raw_env, source, from_env=True))
        elif name in file_values:
            source = f"{config}: {name}"
            setattr(args, action.dest, _convert(action, file_values[name], source, from_env=False))
        else:
            continue
        sources[action.dest] = source
    setattr(args, _SET, given | frozenset(sources))
    return sources


def was_set(args: argparse.Namespace, dest: str) -> bool:
    """True when the command line, the environment or the config file gave `dest` (after `resolve`)."""
    return dest in getattr(args, _SET, getattr(args, _GIVEN, frozenset()))


def _read_file(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    known = {name for name, _ in settings_of(parser)}
    values = {str(k).replace("_", "-"): v for k, v in data.items()}
    unknown = sorted(k for k in data if str(k).replace("_", "-") not in known)
    if unknown:
        raise SettingsError(f"config file {path}: unknown setting(s) {', '.join(unknown)} "
                            "(keys are `aocu serve` flag names without the dashes)")
    return values


def _convert(action: argparse.Action, raw: Any, source: str, *, from_env: bool) -> Any:
    flag = "--" + (flag_name(action) or action.dest)
    if isinstance(action, _SWITCHES):
        return action.const if _boolean(raw, source, flag, from_env) else action.default
    if isinstance(action, argparse._CountAction):
        return _one(argparse.Action([], action.dest, type=int), raw, source, flag)
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+") or \
            (isinstance(action.nargs, int) and action.nargs > 1):
        if from_env or isinstance(raw, str):
            items: list[Any] = [x.strip() for x in str(raw).split(",") if x.strip()]
        elif isinstance(raw, list):
            items = raw
        else:
            raise SettingsError(f"{source}: {flag} takes a list (got {raw!r})")
        return [_one(action, x, source, flag) for x in items]
    if isinstance(action, argparse._StoreAction):
        return _one(action, raw, source, flag)
    raise SettingsError(f"{source}: {flag} cannot be set from a file or the environment")


def _boolean(raw: Any, source: str, flag: str, from_env: bool) -> bool:
    if isinstance(raw, bool):
        return raw
    if from_env and str(raw).strip().lower() in _TRUE + _FALSE:
        return str(raw).strip().lower() in _TRUE
    want = "1/true/yes/on or 0/false/no/off" if from_env else "true or false"
    raise SettingsError(f"{source}: {flag} is on or off: {want} (got {raw!r})")


def _one(action: argparse.Action, raw: Any, source: str, flag: str) -> Any:
    if isinstance(raw, (dict, list)) or raw is None:
        raise SettingsError(f"{source}: {flag} takes one value (got {raw!r})")
    # as on the command line: the text through the flag's type function (TOML 1.5 for an int flag is refused)
    text = raw if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
    try:
        value = action.type(text) if callable(action.type) else text
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        kind = getattr(action.type, "__name__", "")
        raise SettingsError(f"{source}: invalid {kind + ' ' if kind else ''}value {raw!r} for {flag}"
                            + (f": {exc}" if str(exc) and kind not in ("int", "float") else "")) from None
    if action.choices is not None and value not in action.choices:
        raise SettingsError(f"{source}: invalid choice {raw!r} for {flag} "
                            f"(choose from {', '.join(map(str, action.choices))})")
    return value
