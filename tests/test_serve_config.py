"""`aocu serve --config FILE.toml` and AOCU_<FLAG> variables (cu/serve/settings.py): precedence flag > env >
file > default, for every flag of the real serve parser; unknown keys and ill-typed values are one-line errors;
`aocu --version`; the log formats (cu/node/logconf.py)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from cu.cli import build_parser, main
from cu.node import logconf
from cu.serve import settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def serve_parser(parser):
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["serve"]


def parse(parser, argv, environ=None, toml: str | None = None, tmp: Path | None = None):
    if toml is not None:
        assert tmp is not None
        (tmp / "node.toml").write_text(toml)
        argv = [*argv, "--config", str(tmp / "node.toml")]
    args = parser.parse_args(["serve", *argv])
    return args, settings.resolve(args, environ=environ or {})


def test_flag_beats_env_beats_file_beats_default(parser, tmp_path):
    toml = ('workers = 5\nmax-warm = 7\nquiet = true\ncors_origin = ["https://file.example"]\n'
            'tee = "sim"\neval-timeout = 12\n')
    env = {"AOCU_MAX_WARM": "9", "AOCU_CORS_ORIGIN": "https://a.example, https://b.example", "AOCU_TEE": "none",
           "AOCU_WORKERS": "8", "AOCU_THREADS": ""}
    args, sources = parse(parser, ["--workers", "3"], env, toml, tmp_path)
    assert args.workers == 3                                            # flag
    assert args.max_warm == 9 and args.tee == "none"                    # env over file
    assert args.cors_origin == ["https://a.example", "https://b.example"]
    assert args.quiet is True and args.eval_timeout == 12.0             # file (an int for a float flag)
    assert args.threads == 4 and args.data_dir == "./data"              # defaults (an empty variable is unset)
    assert sources["max_warm"] == "AOCU_MAX_WARM" and sources["quiet"].endswith("node.toml: quiet")
    assert "workers" not in sources and "threads" not in sources


def test_env_alone_and_config_from_env(parser, tmp_path):
    (tmp_path / "c.toml").write_text('block-height = 77\n')
    args, _ = parse(parser, [], {"AOCU_CONFIG": str(tmp_path / "c.toml"), "AOCU_QUIET": "yes",
                                 "AOCU_DATA_DIR": "/srv/aocu", "AOCU_LOG_FORMAT": "json"})
    assert args.block_height == 77 and args.quiet is True and args.data_dir == "/srv/aocu"
    assert args.log_format == "json"
    args, _ = parse(parser, ["--quiet"], {"AOCU_QUIET": "0"})
    assert args.quiet is True                                           # the flag still wins


def test_every_serve_flag_is_settable_by_file_and_env(parser, tmp_path):
    """Generic over the parser: each flag's own default, written to the file, reads back unchanged; each flag
    has its AOCU_ name (flags other helpers add are covered with no change here)."""
    sp = serve_parser(parser)
    flags = dict(settings.settings_of(sp))
    assert {"data-dir", "max-warm", "workers", "tee", "cors-origin", "quiet", "log-level", "log-format"} <= set(flags)
    assert "config" not in flags and "help" not in flags
    lines = []
    for name, action in flags.items():
        if action.default is None:
            continue
        if isinstance(action.default, bool):
            lines.append(f"{name} = {str(action.default).lower()}")
        elif isinstance(action.default, (int, float, str)):
            lines.append(f"{name} = {json.dumps(action.default)}")
        elif isinstance(action.default, list):
            lines.append(f"{name} = {json.dumps(action.default)}")
    defaults = parser.parse_args(["serve"])
    args, sources = parse(parser, [], {}, "\n".join(lines) + "\n", tmp_path)
    assert len(sources) == len(lines) > 15
    for name, action in flags.items():
        assert getattr(args, action.dest) == getattr(defaults, action.dest), name
        assert settings.env_name(name) == "AOCU_" + name.upper().replace("-", "_")


@pytest.mark.parametrize("toml,env,needle", [
    ('workers = 2\nmax_wram = 3\nbogus = 1\n', {}, "unknown setting(s) bogus, max_wram"),
    ('workers = "many"\n', {}, "invalid int value 'many' for --workers"),
    ('workers = 1.5\n', {}, "invalid int value 1.5 for --workers"),
    ('quiet = "yes"\n', {}, "--quiet is on or off: true or false"),
    ('cors-origin = 5\n', {}, "--cors-origin takes a list"),
    ('[serve]\nworkers = 2\n', {}, "unknown setting(s) serve"),
    ('workers = [\n', {}, "is not valid TOML"),
    ('', {"AOCU_TEE": "bogus"}, "AOCU_TEE: invalid choice 'bogus' for --tee (choose from auto, snp"),
    ('', {"AOCU_QUIET": "maybe"}, "AOCU_QUIET: --quiet is on or off: 1/true/yes/on or 0/false/no/off"),
    ('', {"AOCU_EVAL_TIMEOUT": "soon"}, "AOCU_EVAL_TIMEOUT: invalid float value 'soon' for --eval-timeout"),
])
def test_bad_settings_are_one_line_errors(parser, tmp_path, toml, env, needle):
    with pytest.raises(SystemExit) as exc:
        parse(parser, [], env, toml, tmp_path)
    msg = str(exc.value.code)
    assert msg.startswith("aocu serve: ") and "\n" not in msg and needle in msg, msg


def test_missing_config_file_from_the_command_line(tmp_path, capsys):
    code = main(["serve", "--config", str(tmp_path / "nope.toml"), "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("aocu: error: config file ") and "nope.toml" in err and "\n" not in err
    assert not (tmp_path / "d").exists()      # refused before anything was created


def test_version():
    out = subprocess.run([sys.executable, "-m", "cu.cli", "--version"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    from cu import __version__
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == f"aocu {__version__} (native engine: wasmtime 50.0.1)\n"


def _record(name: str, msg: str, *args, **extra) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_log_formats():
    rec = _record("aocu.http", "GET %s %d", "/health", 200,
                  fields={"method": "GET", "path": "/health", "status": 200, "ms": 0.2})
    obj = json.loads(logconf.JsonFormatter().format(rec))
    assert obj["level"] == "info" and obj["logger"] == "aocu.http" and obj["msg"] == "GET /health 200"
    assert obj["method"] == "GET" and obj["status"] == 200 and obj["ms"] == 0.2
    assert obj["ts"].endswith("Z") and obj["ts"][10] == "T" and obj["ts"][:4].isdigit()
    text = logconf.TextFormatter().format(rec)
    assert text.endswith(f" INFO aocu.http[{rec.process}]: GET /health 200") and "\n" not in text
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level        # pytest's own capture handlers are put back
    logconf.configure("warning", "json", stream)
    try:
        logging.getLogger("aocu.t").info("hidden")
        logging.getLogger("aocu.t").warning("shown %d", 1)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["msg"] == "shown 1" and json.loads(lines[0])["level"] == "warning"
    with pytest.raises(ValueError):
        logconf.configure("loud", "text")
