"""Intel TDX quote verification, offline, every check named (docs/ATTESTATION.md, TDX quote)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from .certs import cn, key_description, load_any, serial, spki_sha256
from .collateral import load_crl, parse_time, split_signed_json, verify_p256
from .errors import ParseError
from .policy import Policy, TdxPolicy
from .result import VerificationReport, check_reference, never_raises, start_verification
from .tdx import INTEL_QE_VENDOR_ID, PckExtensions, TdxQuote, parse_pck_extensions, parse_quote
from .tdx_unauth import status_note, unauthenticated_status
from .trust import INTEL_ROOT_CN, PINNED_SPKI, SIM_PREFIX, TrustStore, check_signatures, check_validity_at

PCK_LEAF_CN = "Intel SGX PCK Certificate"
PCK_CA_CNS = ("Intel SGX PCK Platform CA", "Intel SGX PCK Processor CA")
TCB_SIGNING_CN = "Intel SGX TCB Signing"
TD_ATTR_ALLOWED = (1 << 0) | (1 << 28) | (1 << 30) | (1 << 63)  # DEBUG, SEPT_VE_DISABLE, PKS, PERFMON
XFAM_FIXED1 = 0x3
XFAM_ALLOWED = 0x6DBE7


def _ec_p256_public(xy: bytes) -> ec.EllipticCurvePublicKey | None:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)
    except ValueError:
        return None


@never_raises("tdx")
def verify_tdx(
    quote: bytes,
    *,
    collateral: dict[str, bytes] | None = None,
    policy: Policy | None = None,
    at: dt.datetime | None = None,
    trust: TrustStore | None = None,
) -> VerificationReport:
    """Verify a TDX quote. `collateral` keys: see attestation.collateral. Never raises for bad evidence."""
    pol_all = policy or Policy.strict()
    pol = pol_all.tdx
    trust = trust or TrustStore.default()
    rep, started = start_verification("tdx", quote, parse_quote, at)
    if started is None:
        return rep
    q, now = started
    rep.add("tdx.parse", True, f"quote v{q.version}, {len(q.raw)} bytes ({q.trailing} trailing)")
    rep.add(
        "tdx.format",
        q.qe_vendor_id == INTEL_QE_VENDOR_ID,
        f"QE vendor ID {q.qe_vendor_id.hex()}"
        + ("" if q.qe_vendor_id == INTEL_QE_VENDOR_ID else " is not Intel's"),
    )

    # PCK chain
    try:
        chain = load_any(q.pck_chain_pem)
    except ParseError as exc:
        rep.add("tdx.pck_chain.structure", False, f"PCK certificate chain invalid: {exc}")
        return rep
    simulated = bool(chain) and cn(chain[-1].subject).startswith(SIM_PREFIX)
    if simulated:
        rep.simulated, rep.tee = True, "sim-tdx"
    pck = _check_chain(
        rep, "tdx.pck_chain", chain, (PCK_LEAF_CN,), trust, now, simulated, pol_all.allow_simulated
    )
    if pck is None:
        return rep
    leaf = pck
    try:
        pext = parse_pck_extensions(leaf)
        rep.add(
            "tdx.pck_extensions",
            True,
            f"FMSPC {pext.fmspc.hex()}, PCEID {pext.pce_id.hex()}, PCESVN {pext.pce_svn}",
        )
    except ParseError as exc:
        rep.add("tdx.pck_extensions", False, str(exc))
        return rep

    # signatures and the attestation-key binding
    ak = _ec_p256_public(q.attestation_key)
    rep.add(
        "tdx.quote_signature",
        ak is not None and verify_p256(ak, q.signature, q.signed_bytes),
        "ECDSA P-256 over header || body with the attestation key"
        if ak is not None
        else "attestation key is not a P-256 point",
    )
    rep.add(
        "tdx.qe_report_signature",
        verify_p256(leaf.public_key(), q.qe_report_signature, q.qe_report.raw),
        "QE report signed by the PCK leaf key",
    )
    expect = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest() + bytes(32)
    rep.add(
        "tdx.ak_binding",
        q.qe_report.report_data == expect,
        "QE REPORTDATA == SHA-256(attestation key || QE auth data) || 0^32"
        if q.qe_report.report_data == expect
        else "QE REPORTDATA does not bind the attestation key",
    )

    col = collateral or {}
    inter = chain[1] if len(chain) == 3 else None
    if "root_crl" in col:
        _check_crl(rep, "tdx.crl.root", col["root_crl"], chain[-1], inter, now)
    if "pck_crl" in col:
        _check_crl(rep, "tdx.crl.pck", col["pck_crl"], inter, leaf, now)

    status = _tcb(rep, q, pext, col, trust, now, simulated, pol_all.allow_simulated)
    rep.fields["tcb_status"] = status
    rep.add(
        "tdx.tcb.status",
        status in pol.accepted_tcb_status and status != "Revoked",
        f"TCB status {status}, accepted {pol.accepted_tcb_status}"
        + ("; supply collateral (tcbInfo, QE identity) to evaluate it" if status == "NotEvaluated" else "")
        + status_note(rep),
        # unauthenticated collateral is fixed by fresh collateral, never by accepting more statuses
        relax=None if status_note(rep) else "tdx.accepted_tcb_status",
    )
    _policy(rep, q, pol)
    b = q.body
    rep.fields.update(
        {
            "version": q.version,
            "mr_td": b.mr_td.hex(),
            "rtmrs": [r.hex() for r in b.rtmrs],
            "report_data": b.report_data.hex(),
            "fmspc": pext.fmspc.hex(),
        }
    )
    return rep


def _check_chain(
    rep: VerificationReport,
    prefix: str,
    chain: list[x509.Certificate],
    leaf_cns: tuple[str, ...],
    trust: TrustStore,
    now: dt.datetime,
    simulated: bool,
    allow_sim: bool,
) -> x509.Certificate | None:
    """Leaf <- intermediate (or root for the TCB signing chain) <- pinned root. Returns the leaf if signatures hold."""
    sp = SIM_PREFIX if simulated else ""
    problems = []
    want_len = 3 if leaf_cns == (PCK_LEAF_CN,) else 2
    if len(chain) != want_len:
        rep.add(
            f"{prefix}.structure",
            False,
            f"PCK certificate chain invalid (incomplete): {len(chain)} certificates, expected {want_len}",
        )
        return None
    names = [cn(c.subject) for c in chain]
    if names[0] not in [sp + n for n in leaf_cns]:
        problems.append(f"leaf CN {names[0]!r}")
    if want_len == 3 and names[1] not in [sp + n for n in PCK_CA_CNS]:
        problems.append(f"intermediate CN {names[1]!r}")
    if names[-1] != sp + INTEL_ROOT_CN:
        problems.append(f"root CN {names[-1]!r}")
    for c in chain:
        k = c.public_key()
        if c.version != x509.Version.v3:
            problems.append(f"{cn(c.subject)!r} not X.509 v3")
        if not isinstance(k, ec.EllipticCurvePublicKey) or k.curve.name != "secp256r1":
            problems.append(f"{cn(c.subject)!r} key is {key_description(c)}, expected P-256")
        if not isinstance(c.signature_hash_algorithm, hashes.SHA256) or c.signature_algorithm_oid != (
            x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        ):
            problems.append(f"{cn(c.subject)!r} not signed ECDSA-with-SHA256")
    for child, issuer in zip(chain, chain[1:], strict=False):
        if child.issuer != issuer.subject:
            problems.append(f"issuer of {cn(child.subject)!r} != subject of {cn(issuer.subject)!r}")
    rep.add(f"{prefix}.structure", not problems, "; ".join(problems) or " <- ".join(names))

    root = chain[-1]
    if simulated:
        trusted = trust.simulated_root_for(root)
        rep.add(
            f"{prefix}.root_pinned",
            trusted is not None,
            "explicitly trusted SIMULATED root"
            if trusted is not None
            else "simulated-TEE evidence: its root is not trusted (TrustStore.with_simulated / --allow-simulated)",
        )
        if prefix == "tdx.pck_chain":
            rep.add(
                "tdx.simulated",
                allow_sim,
                "evidence comes from the simulated TEE, not Intel hardware"
                + ("" if allow_sim else "; refused by policy"),
                relax="allow_simulated",
            )
    else:
        pin = PINNED_SPKI[INTEL_ROOT_CN]
        got = spki_sha256(root)
        ok = got == pin and trust.intel_root is not None and spki_sha256(trust.intel_root) == pin
        rep.add(
            f"{prefix}.root_pinned",
            ok,
            f"root SPKI sha256 {got[:16]}… "
            + ("== pinned Intel SGX Root CA" if ok else f"!= pinned {pin[:16]}… (not the Intel SGX Root CA)"),
        )
        trusted = root if ok else None
    if trusted is None:
        return None
    links = [(f"{prefix}.root_signature", root, root, "root self-signature valid")]
    if want_len == 3:
        links.append((f"{prefix}.intermediate_signature", chain[1], root, "intermediate CA signed by the root"))
    links.append((f"{prefix}.leaf_signature", chain[0], chain[1], f"{names[0]!r} signed by {names[1]!r}"))
    check_signatures(rep, links)
    check_validity_at(rep, f"{prefix}.validity", chain, now)
    if any(not c.ok for c in rep.checks if c.name.startswith(prefix)):
        return None
    return chain[0]


def _check_crl(
    rep: VerificationReport,
    name: str,
    blob: bytes,
    issuer: x509.Certificate | None,
    subject: x509.Certificate,
    now: dt.datetime,
) -> None:
    try:
        crl = load_crl(blob)
    except ParseError as exc:
        rep.add(name, False, str(exc))
        return
    problems = []
    if issuer is None or crl.issuer != issuer.subject:
        problems.append(f"CRL issuer {cn(crl.issuer)!r} is not the expected issuer")
    elif not crl.is_signature_valid(issuer.public_key()):
        problems.append(f"CRL signature by {cn(issuer.subject)!r} invalid")
    if crl.last_update_utc > now or crl.next_update_utc is None or crl.next_update_utc < now:
        problems.append(
            f"CRL outside its window ({crl.last_update_utc.isoformat()} .. "
            f"{crl.next_update_utc.isoformat() if crl.next_update_utc else '?'}): refusing to use it"
        )
    if crl.get_revoked_certificate_by_serial_number(serial(subject)) is not None:
        problems.append(f"{cn(subject.subject)!r} serial {serial(subject):x} is revoked")
    rep.add(
        name,
        not problems,
        "; ".join(problems)
        or f"current, signed by {cn(crl.issuer)!r}; "
        f"{cn(subject.subject)!r} not revoked ({len(list(crl))} entries)",
    )


def _signed_doc(
    rep: VerificationReport,
    prefix: str,
    body: bytes,
    chain_blob: bytes | None,
    member: str,
    trust: TrustStore,
    now: dt.datetime,
    simulated: bool,
    allow_sim: bool,
) -> dict | None:
    try:
        signed, value, sig = split_signed_json(body, member)
    except ParseError as exc:
        rep.add(f"{prefix}.parse", False, str(exc))
        return None
    if chain_blob is None:
        rep.add(f"{prefix}.signing_chain", False, "issuer chain not supplied")
        return None
    try:
        chain = load_any(chain_blob)
    except ParseError as exc:
        rep.add(f"{prefix}.signing_chain", False, str(exc))
        return None
    signer = _check_chain(
        rep, f"{prefix}.signing_chain", chain, (TCB_SIGNING_CN,), trust, now, simulated, allow_sim
    )
    if signer is None:
        return None
    rep.add(
        f"{prefix}.signature",
        verify_p256(signer.public_key(), sig, signed),
        f"ECDSA P-256 over the exact {member!r} bytes by {cn(signer.subject)!r}",
    )
    try:
        issue, nxt = parse_time(value.get("issueDate"), member), parse_time(value.get("nextUpdate"), member)
    except ParseError as exc:
        rep.add(f"{prefix}.validity", False, str(exc))
        return None
    ok = issue <= now <= nxt
    rep.add(
        f"{prefix}.validity",
        ok,
        f"{member} {issue.isoformat()} .. {nxt.isoformat()}"
        + ("" if ok else f": {'expired' if now > nxt else 'not yet valid'} at {now.isoformat()}"),
    )
    return value if all(c.ok for c in rep.checks if c.name.startswith(prefix)) else None


def _status_rank_downgrade(status: str, other: str | None) -> str:
    """Intel QVL convergence: an OutOfDate module/QE downgrades the platform status."""
    if other == "Revoked" or status == "Revoked":
        return "Revoked"
    if other == "OutOfDate":
        if status in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if status in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return status


def _svn_list(level: dict, key: str) -> list[int]:
    comps = level.get("tcb", {}).get(key)
    if not isinstance(comps, list) or len(comps) != 16:
        raise ParseError(f"tcbLevel {key} must list 16 components")
    return [int(c["svn"]) for c in comps]


def platform_tcb_level(tcb_info: dict, pext: PckExtensions, tee_tcb_svn: bytes) -> dict | None:
    """First level (levels sorted descending) whose every SVN is <= the platform's."""
    start = 2 if tee_tcb_svn[1] > 0 else 0
    for level in tcb_info.get("tcbLevels", []):
        sgx = _svn_list(level, "sgxtcbcomponents")
        tdx = _svn_list(level, "tdxtcbcomponents")
        pcesvn = int(level.get("tcb", {}).get("pcesvn", 1 << 30))
        if (
            all(pext.cpu_svn_components[i] >= sgx[i] for i in range(16))
            and pext.pce_svn >= pcesvn
            and all(tee_tcb_svn[i] >= tdx[i] for i in range(start, 16))
        ):
            return level
    return None


def module_identity(tcb_info: dict, tee_tcb_svn: bytes) -> tuple[dict | None, dict | None]:
    """(matching tdxModuleIdentities entry, its first level with isvsvn <= TEE_TCB_SVN[0]) for TDX 1.5 modules."""
    want = f"TDX_{tee_tcb_svn[1]:02x}".lower()
    for ident in tcb_info.get("tdxModuleIdentities", []) or []:
        if str(ident.get("id", "")).lower() == want:
            for level in ident.get("tcbLevels", []):
                if int(level.get("tcb", {}).get("isvsvn", 1 << 30)) <= tee_tcb_svn[0]:
                    return ident, level
            return ident, None
    return None, None


def _tcb(
    rep: VerificationReport,
    q: TdxQuote,
    pext: PckExtensions,
    col: dict[str, bytes],
    trust: TrustStore,
    now: dt.datetime,
    simulated: bool,
    allow_sim: bool,
) -> str:
    if "tcb_info" not in col or "qe_identity" not in col:
        missing = [k for k in ("tcb_info", "qe_identity") if k not in col]
        rep.fields["collateral"] = "absent"
        if col:
            rep.add("tdx.collateral", False, f"incomplete collateral: missing {', '.join(missing)}")
        return "NotEvaluated"
    tcb_info = _signed_doc(
        rep,
        "tdx.tcb_info",
        col["tcb_info"],
        col.get("tcb_info_issuer_chain"),
        "tcbInfo",
        trust,
        now,
        simulated,
        allow_sim,
    )
    qe_id = _signed_doc(
        rep,
        "tdx.qe_identity",
        col["qe_identity"],
        col.get("qe_identity_issuer_chain"),
        "enclaveIdentity",
        trust,
        now,
        simulated,
        allow_sim,
    )
    if tcb_info is None or qe_id is None:  # not authenticated: say what it would give, still Invalid
        unauthenticated_status(rep, col, lambda r, t, e: _evaluate(r, q, pext, t, e))
        return "Invalid"
    try:
        return _evaluate(rep, q, pext, tcb_info, qe_id)
    except (ParseError, KeyError, TypeError, ValueError) as exc:
        rep.add("tdx.collateral", False, f"malformed collateral: {exc}")
        return "Invalid"


def _evaluate(rep: VerificationReport, q: TdxQuote, pext: PckExtensions, tcb_info: dict, qe_id: dict) -> str:
    ok = tcb_info.get("id") == "TDX" and tcb_info.get("version") == 3
    rep.add(
        "tdx.tcb_info.format",
        ok,
        f"id {tcb_info.get('id')!r}, version {tcb_info.get('version')!r}"
        + ("" if ok else " (expected 'TDX', 3)"),
    )
    fm = str(tcb_info.get("fmspc", "")).lower() == pext.fmspc.hex()
    pc = str(tcb_info.get("pceId", "")).lower() == pext.pce_id.hex()
    rep.add(
        "tdx.tcb_info.platform_match",
        fm and pc,
        f"tcbInfo FMSPC {tcb_info.get('fmspc')} / PCEID {tcb_info.get('pceId')} vs PCK {pext.fmspc.hex()} / "
        f"{pext.pce_id.hex()}",
    )
    svn = q.body.tee_tcb_svn
    # TDX module identity: from tdxModuleIdentities when TEE_TCB_SVN[1] > 0 (Intel QVL), else tdxModule.
    module_status = None
    if svn[1] > 0:
        ident, mlevel = module_identity(tcb_info, svn)
        if ident is None:
            rep.add("tdx.tcb.module_level", False, f"no tdxModuleIdentities entry TDX_{svn[1]:02x}")
            return "Invalid"
        src = ident
        if mlevel is None:
            rep.add(
                "tdx.tcb.module_level",
                False,
                f"TDX module SVN {svn[0]} below every level of TDX_{svn[1]:02x}",
            )
            return "Invalid"
        module_status = str(mlevel.get("tcbStatus"))
        rep.add(
            "tdx.tcb.module_level",
            True,
            f"TDX_{svn[1]:02x} isvsvn {mlevel['tcb']['isvsvn']}: {module_status}",
        )
    else:
        src = tcb_info.get("tdxModule") or {}
    mrs = bytes.fromhex(src.get("mrsigner", ""))
    attrs = bytes.fromhex(src.get("attributes", ""))
    mask = bytes.fromhex(src.get("attributesMask", ""))
    masked = bytes(a & m for a, m in zip(q.body.seam_attributes, mask, strict=True))
    mod_ok = q.body.mr_signer_seam == mrs and masked == attrs
    rep.add(
        "tdx.tdx_module",
        mod_ok,
        "MRSIGNERSEAM and SEAM_ATTRIBUTES match the TDX module identity"
        if mod_ok
        else "MRSIGNERSEAM / SEAM_ATTRIBUTES do not match tcbInfo",
    )

    level = platform_tcb_level(tcb_info, pext, svn)
    if level is None:
        rep.add(
            "tdx.tcb.platform_level",
            False,
            "TCB level not found: no tcbInfo level is satisfied by the "
            "platform's CPUSVN/PCESVN/TEE_TCB_SVN (TCB not supported)",
        )
        platform_status = "Invalid"
    else:
        platform_status = str(level.get("tcbStatus"))
        rep.fields["tcb_date"] = level.get("tcbDate")
        rep.fields["advisory_ids"] = level.get("advisoryIDs", [])
        rep.add(
            "tdx.tcb.platform_level",
            True,
            f"{platform_status} (tcbDate {level.get('tcbDate')}"
            + (f", advisories {', '.join(level.get('advisoryIDs', []))}" if level.get("advisoryIDs") else "")
            + ")",
        )

    # QE identity
    qe = q.qe_report
    idok = qe_id.get("id") == "TD_QE" and qe_id.get("version") == 2
    misc_ok = (qe.misc_select & int(qe_id["miscselectMask"], 16)) == int(qe_id["miscselect"], 16)
    amask = bytes.fromhex(qe_id["attributesMask"])
    attr_ok = bytes(a & m for a, m in zip(qe.attributes, amask, strict=True)) == bytes.fromhex(
        qe_id["attributes"]
    )
    signer_ok = qe.mr_signer == bytes.fromhex(qe_id["mrsigner"])
    prod_ok = qe.isv_prod_id == int(qe_id["isvprodid"])
    fails = [
        n
        for n, v in (
            ("id/version", idok),
            ("MISCSELECT", misc_ok),
            ("ATTRIBUTES", attr_ok),
            ("MRSIGNER", signer_ok),
            ("ISVPRODID", prod_ok),
        )
        if not v
    ]
    rep.add(
        "tdx.qe_identity.match",
        not fails,
        "QE report matches TD_QE identity" if not fails else "QE report mismatch: " + ", ".join(fails),
    )
    qe_status = None
    for lvl in qe_id.get("tcbLevels", []):
        if int(lvl["tcb"]["isvsvn"]) <= qe.isv_svn:
            qe_status = str(lvl["tcbStatus"])
            break
    rep.add(
        "tdx.tcb.qe_level",
        qe_status is not None,
        f"QE ISVSVN {qe.isv_svn}: {qe_status or 'no level matches'}",
    )
    if platform_status == "Invalid" or qe_status is None or not (mod_ok and not fails):
        return "Invalid"
    status = _status_rank_downgrade(platform_status, module_status)
    status = _status_rank_downgrade(status, qe_status)
    rep.fields.update(
        {"platform_status": platform_status, "module_status": module_status, "qe_status": qe_status}
    )
    return status


def _policy(rep: VerificationReport, q: TdxQuote, pol: TdxPolicy) -> None:
    b = q.body
    rep.add(
        "tdx.policy.debug",
        not b.debug or pol.allow_debug,
        ("TD_ATTRIBUTES.DEBUG set" + (" (permitted by policy)" if pol.allow_debug else "; refused"))
        if b.debug
        else "TD_ATTRIBUTES.DEBUG clear",
        relax="tdx.allow_debug",
    )
    attrs, xfam = b.td_attributes_int, b.xfam_int
    problems = []
    if attrs & ~TD_ATTR_ALLOWED:
        problems.append(f"TD_ATTRIBUTES has bits outside DEBUG/SEPT_VE_DISABLE/PKS/PERFMON (0x{attrs:x})")
    if xfam & XFAM_FIXED1 != XFAM_FIXED1 or xfam & ~XFAM_ALLOWED:
        problems.append(f"XFAM 0x{xfam:x} outside the allowed set")
    rep.add(
        "tdx.policy.attributes",
        not problems,
        "; ".join(problems) or f"TD_ATTRIBUTES 0x{attrs:x}, XFAM 0x{xfam:x}",
    )

    exact = functools.partial(check_reference, rep)
    exact("tdx.policy.mrtd", "mrtd", b.mr_td, pol.mrtd)
    for i in range(4):
        exact(f"tdx.policy.rtmr{i}", f"rtmr{i}", b.rtmrs[i], getattr(pol, f"rtmr{i}"))
    exact("tdx.policy.mr_config_id", "mr_config_id", b.mr_config_id, pol.mr_config_id)
    exact("tdx.policy.mr_owner", "mr_owner", b.mr_owner, pol.mr_owner)
    exact("tdx.policy.mr_owner_config", "mr_owner_config", b.mr_owner_config, pol.mr_owner_config)
    exact("tdx.policy.mr_seam", "mr_seam", b.mr_seam, pol.mr_seam)
    exact("tdx.policy.report_data", "report_data", b.report_data, pol.report_data)
    if pol.minimum_tee_tcb_svn is not None:
        low = [i for i in range(16) if b.tee_tcb_svn[i] < pol.minimum_tee_tcb_svn[i]]
        rep.add(
            "tdx.policy.tee_tcb_svn",
            not low,
            f"TEE_TCB_SVN {b.tee_tcb_svn.hex()} vs minimum {pol.minimum_tee_tcb_svn.hex()}",
            relax="tdx.minimum_tee_tcb_svn",
        )
