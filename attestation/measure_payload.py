"""Inputs of `aocu measure --payload DIR`: the images/build.sh output (vmlinuz, initrd.img, cmdline and, with
`build.sh --firmware`, the AmdSev firmware) checked against its manifest.json, and the vCPU configurations one
run measures (`--vcpus 1,2,4 --vcpu-type EPYC-v4,EPYC-Genoa`: every count with every type).

The manifest check matters because the reference values are published next to the manifest: a payload file
changed after the build (or another firmware) would give reference values for a guest nobody published.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .measure import MeasureError

PAYLOAD_FILES = ("vmlinuz", "initrd.img", "cmdline")
MAX_CONFIGS = 64  # the reference-values file lists every digest; a typo like 1,2,...,999 is not a request


@dataclass(frozen=True)
class Payload:
    kernel: Path
    initrd: Path
    cmdline: str
    firmware: Path | None  # the manifest's firmware (build.sh --firmware), if any


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_payload(directory: Path, ovmf: Path | None = None) -> Payload:
    """The payload in DIRECTORY; with a manifest.json, every file (and OVMF, when the manifest names a
    firmware) must be the one the manifest records."""
    for name in PAYLOAD_FILES:
        if not (directory / name).is_file():
            raise MeasureError(f"{directory}/{name} missing (run images/build.sh first)")
    firmware = None
    manifest = directory / "manifest.json"
    if manifest.is_file():
        try:
            artifacts = json.loads(manifest.read_text())["artifacts"]
            expected = {str(n): str(a["sha256"]) for n, a in artifacts.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MeasureError(f"{manifest} is unreadable ({exc})") from None
        for name, digest in sorted(expected.items()):
            if name.endswith(".fd"):
                firmware = directory / name
                path = ovmf or firmware
                what = f"the firmware {name} the payload was built with"
            else:
                path = directory / name
                what = f"the {name} images/build.sh wrote"
            if not path.is_file():
                raise MeasureError(f"{path} missing (listed in {manifest})")
            if _sha256(path) != digest:
                raise MeasureError(f"{path} is not {what} (sha256 differs from {manifest})")
    return Payload(directory / "vmlinuz", directory / "initrd.img", (directory / "cmdline").read_text(), firmware)


def parse_counts(text: str) -> list[int]:
    """'2' or '1,2,4' -> vCPU counts (each at least 1, no repeats)."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise MeasureError(f"--vcpus must be a count or a comma-separated list of counts, not {text!r}") from None
    if any(c < 1 for c in counts):
        raise MeasureError("--vcpus must be at least 1")
    if len(set(counts)) != len(counts):
        raise MeasureError(f"--vcpus lists a count twice: {text!r}")
    return counts


def vcpu_configs(counts: list[int], types: list[str | None]) -> list[tuple[int, str | None]]:
    """Every count with every type, counts outermost (the order of the printed digests)."""
    configs = [(n, t) for n in counts for t in types]
    if len(configs) > MAX_CONFIGS:
        raise MeasureError(f"{len(configs)} vCPU configurations requested; at most {MAX_CONFIGS}")
    return configs
