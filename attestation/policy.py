"""Policy / reference-values file (docs/POLICY.md): strict defaults, every key validated and named in errors.

The accepted format is the JSON Schema `attestation/policy.schema.json` (package data; docs/policy.schema.json is
the same file). A document is validated against it first, so an error names the JSON path and the reason in one
line; the parsing below then builds the dataclasses (and re-checks everything, for callers that pass Python
objects). Unknown keys are an error at every level so that a typo never relaxes a check.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import MAX_INPUT_BYTES, PolicyError

SCHEMA_FILE = "policy.schema.json"
_HEX = re.compile(r"[0-9A-Fa-f]*")
_ABI = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})")

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "TDRelaunchAdvised",
    "TDRelaunchAdvisedConfigurationNeeded",
    "NotEvaluated",  # pseudo-status: no collateral was supplied, so the TCB could not be evaluated
)
SNP_PRODUCTS = ("Milan", "Genoa", "Turin")
EXTRA_SNP_KEYS = (
    "allow_migrate_ma", "minimum_guest_svn", "family_id", "image_id", "minimum_abi", "allow_smt", "allow_cxl",
    "require_policy_bits",
)  # fmt: skip
REQUIRABLE_POLICY_BITS = (
    "SINGLE_SOCKET",
    "MEM_AES_256_XTS",
    "RAPL_DIS",
    "CIPHERTEXT_HIDING",
    "PAGE_SWAP_DISABLE",
)
EXTRA_TDX_KEYS = ("report_data", "mr_owner", "mr_owner_config", "mr_seam", "minimum_tee_tcb_svn")


@dataclass
class SnpPolicy:
    measurement: list[bytes] | None = None
    host_data: bytes | None = None
    report_data: bytes | None = None
    vmpl: list[int] = field(default_factory=lambda: [0])
    allow_debug: bool = False
    permit_provisional_firmware: bool = False
    minimum_tcb: dict[str, int] = field(
        default_factory=lambda: {"fmc": 0, "bl": 0, "tee": 0, "snp": 0, "ucode": 0}
    )
    minimum_build: int = 0
    products: list[str] = field(default_factory=lambda: list(SNP_PRODUCTS))
    id_key_digests: list[bytes] = field(default_factory=list)
    author_key_digests: list[bytes] = field(default_factory=list)
    allow_migrate_ma: bool = False
    minimum_guest_svn: int = 0
    family_id: bytes | None = None
    image_id: bytes | None = None
    minimum_abi: tuple[int, int] = (0, 0)
    allow_smt: bool = True  # every real report seen allows SMT; refusing it needs an explicit false
    allow_cxl: bool = False
    require_policy_bits: list[str] = field(default_factory=list)


@dataclass
class TdxPolicy:
    mrtd: list[bytes] | None = None
    rtmr0: bytes | None = None
    rtmr1: bytes | None = None
    rtmr2: bytes | None = None
    rtmr3: bytes | None = None
    mr_config_id: bytes | None = None
    allow_debug: bool = False
    accepted_tcb_status: list[str] = field(default_factory=lambda: ["UpToDate"])
    report_data: bytes | None = None
    mr_owner: bytes | None = None
    mr_owner_config: bytes | None = None
    mr_seam: bytes | None = None
    minimum_tee_tcb_svn: bytes | None = None


@dataclass
class Policy:
    snp: SnpPolicy = field(default_factory=SnpPolicy)
    tdx: TdxPolicy = field(default_factory=TdxPolicy)
    allow_simulated: bool = False

    @classmethod
    def strict(cls) -> Policy:
        return cls()

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Read, validate against the schema and parse; PolicyError("policy FILE: <json path>: <reason>")."""
        p = Path(path)
        try:
            if p.stat().st_size > MAX_INPUT_BYTES:
                raise PolicyError(f"policy {path}: larger than {MAX_INPUT_BYTES} bytes")
            raw = p.read_bytes()
        except OSError as exc:
            raise PolicyError(f"policy {path}: cannot read it ({exc.strerror or exc})") from None
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"policy {path}: not valid JSON ({exc})") from None
        return cls.from_json(obj, source=str(path))

    @classmethod
    def from_json(cls, obj: object, *, source: str | None = None) -> Policy:
        """Validate `obj` (a decoded JSON document) against the schema, then parse it. `source` names the file
        in error messages."""
        validate(obj, source)
        if not isinstance(obj, dict):
            raise PolicyError("policy: top level must be a JSON object")
        _no_unknown(obj, ("snp", "tdx", "allow_simulated", "$schema", "comment", "_comment"), "policy")
        return cls(
            snp=_snp(obj.get("snp", {})),
            tdx=_tdx(obj.get("tdx", {})),
            allow_simulated=_bool(obj, "allow_simulated", False, "allow_simulated"),
        )


# -- schema validation ------------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    """The policy JSON Schema (draft 2020-12) shipped as package data."""
    return json.loads(_schema_text())


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema  # imported on first use: verifying without --policy does not pay for it

    base = jsonschema.Draft202012Validator
    # JSON Schema's "integer" admits 1.0; the parser below does not, so the schema check must not either.
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _c, v: isinstance(v, int) and not isinstance(v, bool)
    )
    return jsonschema.validators.extend(base, type_checker=checker)(schema())


# Which error to report when one value breaks several keywords: the most basic first.
_RANK = {"type": 0, "additionalProperties": 1, "enum": 2, "pattern": 3, "minLength": 4, "maxLength": 4}
_TYPE_WORDS = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "null",
    "number": "a number",
}


def validate(obj: object, source: str | None = None) -> None:
    """PolicyError with one line, "policy[ FILE]: <json path>: <reason>", for the first schema violation."""
    errors = list(_validator().iter_errors(obj))
    if not errors:
        return
    first = errors[0]
    err = min(
        (e for e in errors if e.absolute_path == first.absolute_path), key=lambda e: _RANK.get(e.validator, 9)
    )
    where = f"policy {source}" if source else "policy"
    raise PolicyError(f"{where}: {err.json_path}: {_reason(err)}")


def _reason(err: Any) -> str:
    kw, sch, inst = err.validator, err.schema, err.instance
    if kw == "type":
        types = [sch["type"]] if isinstance(sch["type"], str) else sch["type"]
        words = [_TYPE_WORDS.get(t, t) for t in types]
        what = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
        return "the top level must be a JSON object" if not err.absolute_path else f"must be {what}"
    if kw == "additionalProperties":
        allowed = list(sch.get("properties", {}))
        unknown = [k for k in inst if k not in allowed]
        shown = ", ".join(a for a in allowed if not a.startswith("_"))
        return f"unknown key {unknown[0]!r} (allowed: {shown})"
    if kw == "enum":
        return f"{inst!r} is not one of {', '.join(map(str, err.validator_value))}"
    if kw in ("minLength", "maxLength") and sch.get("pattern") == "^[0-9A-Fa-f]*$":
        n = sch["minLength"]
        return f"must be {n // 2} bytes ({n} hex digits), got {len(inst)} characters"
    if kw == "pattern":
        if sch["pattern"] == "^[0-9A-Fa-f]*$":
            return "must be hex digits only (0-9, a-f, A-F; no spaces or 0x prefix)"
        if "minimum_abi" in err.absolute_path:
            return 'must be "MAJOR.MINOR" (decimal numbers), e.g. "1.55"'
        return f"must match {sch['pattern']}"
    if kw in ("minimum", "maximum"):
        return f"must be an integer in [{sch.get('minimum', 0)}, {sch.get('maximum')}]"
    if kw == "minItems":
        return "must not be an empty list"
    return err.message


# -- parsing --------------------------------------------------------------------------------------


def _no_unknown(obj: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise PolicyError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(a for a in allowed if a[0] != '_')})"
            )


def _bool(obj: dict, key: str, default: bool, path: str) -> bool:
    v = obj.get(key, default)
    if not isinstance(v, bool):
        raise PolicyError(f"{path}: must be true or false")
    return v


def _int(obj: dict, key: str, default: int, path: str, hi: int = 2**64 - 1) -> int:
    v = obj.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
        raise PolicyError(f"{path}: must be an integer in [0, {hi}]")
    return v


def _hex(v: object, size: int, path: str) -> bytes:
    if not isinstance(v, str):
        raise PolicyError(f"{path}: must be a hex string of {size} bytes")
    if not _HEX.fullmatch(v) or len(v) % 2:
        raise PolicyError(f"{path}: not valid hex")
    b = bytes.fromhex(v)
    if len(b) != size:
        raise PolicyError(f"{path}: must be {size} bytes ({2 * size} hex digits), got {len(b)}")
    return b


def _opt_hex(obj: dict, key: str, size: int, path: str) -> bytes | None:
    return None if obj.get(key) is None else _hex(obj[key], size, path)


def _hex_list(obj: dict, key: str, size: int, path: str, *, allow_single: bool = True) -> list[bytes] | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, str) and allow_single:
        v = [v]
    if not isinstance(v, list):
        raise PolicyError(f"{path}: must be a list of hex strings")
    return [_hex(x, size, f"{path}[{i}]") for i, x in enumerate(v)]


def _snp(obj: object) -> SnpPolicy:
    if not isinstance(obj, dict):
        raise PolicyError("snp: must be an object")
    base = SnpPolicy()
    documented = (
        "measurement", "host_data", "report_data", "vmpl", "allow_debug", "permit_provisional_firmware",
        "minimum_tcb", "minimum_build", "products", "id_key_digests", "author_key_digests",
    )  # fmt: skip
    _no_unknown(obj, documented + EXTRA_SNP_KEYS, "snp")
    vmpl = obj.get("vmpl", base.vmpl)
    if isinstance(vmpl, int) and not isinstance(vmpl, bool):
        vmpl = [vmpl]
    if (
        not isinstance(vmpl, list)
        or not vmpl
        or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 3 for x in vmpl)
    ):
        raise PolicyError("snp.vmpl: must be a non-empty list of integers 0-3")
    mt = obj.get("minimum_tcb", {})
    if not isinstance(mt, dict):
        raise PolicyError("snp.minimum_tcb: must be an object")
    _no_unknown(mt, ("fmc", "bl", "tee", "snp", "ucode"), "snp.minimum_tcb")
    minimum_tcb = {
        k: _int(mt, k, 0, f"snp.minimum_tcb.{k}", 255) for k in ("fmc", "bl", "tee", "snp", "ucode")
    }
    products = obj.get("products", base.products)
    if not isinstance(products, list) or not products or not all(p in SNP_PRODUCTS for p in products):
        raise PolicyError(f"snp.products: must be a non-empty list drawn from {list(SNP_PRODUCTS)}")
    abi = obj.get("minimum_abi", "0.0")
    m = _ABI.fullmatch(abi) if isinstance(abi, str) else None
    if m is None:
        raise PolicyError('snp.minimum_abi: must be "MAJOR.MINOR"')
    major, minor = int(m.group(1)), int(m.group(2))
    return SnpPolicy(
        measurement=_hex_list(obj, "measurement", 48, "snp.measurement"),
        host_data=_opt_hex(obj, "host_data", 32, "snp.host_data"),
        report_data=_opt_hex(obj, "report_data", 64, "snp.report_data"),
        vmpl=vmpl,
        allow_debug=_bool(obj, "allow_debug", False, "snp.allow_debug"),
        permit_provisional_firmware=_bool(
            obj, "permit_provisional_firmware", False, "snp.permit_provisional_firmware"
        ),
        minimum_tcb=minimum_tcb,
        minimum_build=_int(obj, "minimum_build", 0, "snp.minimum_build", 255),
        products=products,
        id_key_digests=_hex_list(obj, "id_key_digests", 48, "snp.id_key_digests", allow_single=False) or [],
        author_key_digests=_hex_list(
            obj, "author_key_digests", 48, "snp.author_key_digests", allow_single=False
        )
        or [],
        allow_migrate_ma=_bool(obj, "allow_migrate_ma", False, "snp.allow_migrate_ma"),
        minimum_guest_svn=_int(obj, "minimum_guest_svn", 0, "snp.minimum_guest_svn", 2**32 - 1),
        family_id=_opt_hex(obj, "family_id", 16, "snp.family_id"),
        image_id=_opt_hex(obj, "image_id", 16, "snp.image_id"),
        minimum_abi=(major, minor),
        allow_smt=_bool(obj, "allow_smt", True, "snp.allow_smt"),
        allow_cxl=_bool(obj, "allow_cxl", False, "snp.allow_cxl"),
        require_policy_bits=_require_bits(obj.get("require_policy_bits", [])),
    )


def _require_bits(v: object) -> list[str]:
    if not isinstance(v, list) or not all(x in REQUIRABLE_POLICY_BITS for x in v):
        raise PolicyError(
            f"snp.require_policy_bits: must be a list drawn from {list(REQUIRABLE_POLICY_BITS)}"
        )
    return list(v)


def _tdx(obj: object) -> TdxPolicy:
    if not isinstance(obj, dict):
        raise PolicyError("tdx: must be an object")
    documented = (
        "mrtd",
        "rtmr0",
        "rtmr1",
        "rtmr2",
        "rtmr3",
        "mr_config_id",
        "allow_debug",
        "accepted_tcb_status",
    )
    _no_unknown(obj, documented + EXTRA_TDX_KEYS, "tdx")
    statuses = obj.get("accepted_tcb_status", ["UpToDate"])
    if not isinstance(statuses, list) or not statuses or not all(s in TCB_STATUSES for s in statuses):
        raise PolicyError(
            f"tdx.accepted_tcb_status: must be a non-empty list drawn from {list(TCB_STATUSES)}"
        )
    return TdxPolicy(
        mrtd=_hex_list(obj, "mrtd", 48, "tdx.mrtd"),
        rtmr0=_opt_hex(obj, "rtmr0", 48, "tdx.rtmr0"),
        rtmr1=_opt_hex(obj, "rtmr1", 48, "tdx.rtmr1"),
        rtmr2=_opt_hex(obj, "rtmr2", 48, "tdx.rtmr2"),
        rtmr3=_opt_hex(obj, "rtmr3", 48, "tdx.rtmr3"),
        mr_config_id=_opt_hex(obj, "mr_config_id", 48, "tdx.mr_config_id"),
        allow_debug=_bool(obj, "allow_debug", False, "tdx.allow_debug"),
        accepted_tcb_status=statuses,
        report_data=_opt_hex(obj, "report_data", 64, "tdx.report_data"),
        mr_owner=_opt_hex(obj, "mr_owner", 48, "tdx.mr_owner"),
        mr_owner_config=_opt_hex(obj, "mr_owner_config", 48, "tdx.mr_owner_config"),
        mr_seam=_opt_hex(obj, "mr_seam", 48, "tdx.mr_seam"),
        minimum_tee_tcb_svn=_opt_hex(obj, "minimum_tee_tcb_svn", 16, "tdx.minimum_tee_tcb_svn"),
    )
