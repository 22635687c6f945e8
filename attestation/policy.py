"""Policy / reference-values file (ARCHITECTURE.md): strict defaults, every key validated and named in errors.

Keys beyond the documented set (all optional, strict or neutral defaults) are listed in EXTRA_SNP_KEYS /
EXTRA_TDX_KEYS and in attestation/README.md. Unknown keys are an error so that a typo never relaxes a check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MAX_INPUT_BYTES, PolicyError

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
        p = Path(path)
        if p.stat().st_size > MAX_INPUT_BYTES:
            raise PolicyError(f"{path}: policy file larger than {MAX_INPUT_BYTES} bytes")
        try:
            obj = json.loads(p.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_json(obj)

    @classmethod
    def from_json(cls, obj: object) -> Policy:
        if not isinstance(obj, dict):
            raise PolicyError("policy: top level must be a JSON object")
        _no_unknown(obj, ("snp", "tdx", "allow_simulated", "$schema", "comment", "_comment"), "policy")
        return cls(
            snp=_snp(obj.get("snp", {})),
            tdx=_tdx(obj.get("tdx", {})),
            allow_simulated=_bool(obj, "allow_simulated", False, "allow_simulated"),
        )


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
    try:
        b = bytes.fromhex(v)
    except ValueError:
        raise PolicyError(f"{path}: not valid hex") from None
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
    if not isinstance(vmpl, list) or not vmpl or not all(isinstance(x, int) and 0 <= x <= 3 for x in vmpl):
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
    try:
        major, minor = (int(x) for x in str(abi).split("."))
    except ValueError:
        raise PolicyError('snp.minimum_abi: must be "MAJOR.MINOR"') from None
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
