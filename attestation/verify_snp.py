"""SEV-SNP report verification, offline, every check named (docs/ATTESTATION.md, SEV-SNP report)."""

from __future__ import annotations

import datetime as dt
import functools

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import chaincache
from .certs import (
    AmdExtensions,
    cn,
    key_description,
    load_any,
    parse_amd_extensions,
    pss_profile_error,
    serial,
    spki_sha256,
)
from .errors import MAX_INPUT_BYTES, ParseError
from .policy import Policy
from .result import VerificationReport, check_reference, never_raises, start_verification
from .snp import (
    PRODUCTS,
    SIGNING_KEYS,
    SnpReport,
    format_errors,
    fw,
    parse_cert_table,
    parse_report,
    product_from_cpuid1_eax,
)
from .trust import PINNED_SPKI, SIM_PREFIX, TrustStore, check_signatures, check_validity_at

AMD_ORG = "Advanced Micro Devices"


def _strip_sim(name: str) -> tuple[str, bool]:
    return (name[len(SIM_PREFIX) :], True) if name.startswith(SIM_PREFIX) else (name, False)


def _load_certs(blob: bytes | None, what: str) -> list[x509.Certificate]:
    if blob is None:
        return []
    if len(blob) > MAX_INPUT_BYTES:
        raise ParseError(f"{what}: larger than {MAX_INPUT_BYTES} bytes")
    try:
        return load_any(blob)
    except ParseError as exc:
        raise ParseError(f"{what}: {exc}") from None


@never_raises("snp")
def verify_snp(
    report: bytes,
    *,
    vcek: bytes | None = None,
    chain: bytes | None = None,
    cert_table: bytes | None = None,
    crl: bytes | None = None,
    policy: Policy | None = None,
    at: dt.datetime | None = None,
    trust: TrustStore | None = None,
    product: str | None = None,
) -> VerificationReport:
    """Verify an SNP report.

    vcek: the VCEK or VLEK (DER or PEM); chain: ASK/ASVK and/or ARK (PEM, e.g. a KDS cert_chain); cert_table:
    an extended-report GHCB table; crl: an ARK-signed CRL (DER/PEM) to check the ASK/ASVK against; product:
    'Milan', 'Genoa', 'Turin' optionally with stepping ('Milan-B0'), needed only for v2 reports when no
    certificate names it. Never raises for bad evidence: failures are checks in the returned report.
    """
    pol = (policy or Policy.strict()).snp
    allow_sim = (policy or Policy.strict()).allow_simulated
    trust = trust or TrustStore.default()

    # 1. parse + structure
    rep, started = start_verification("snp", report, parse_report, at)
    if started is None:
        return rep
    r, now = started
    rep.add("snp.parse", True, f"version {r.version}, {SIGNING_KEYS.get(r.signing_key, '?')} signer")
    errs = format_errors(r)
    rep.add(
        "snp.format", not errs, "; ".join(errs) or "sizes, SIGNATURE_ALGO, POLICY bit 17 and MBZ fields ok"
    )

    # 2. endorsements
    try:
        table = parse_cert_table(cert_table) if cert_table else {}
        leaf_certs = _load_certs(vcek, "VCEK/VLEK")
        chain_certs = _load_certs(chain, "certificate chain")
        for name in ("vcek", "vlek", "ask", "ark"):
            if name in table:
                certs = _load_certs(table[name], f"cert table {name}")
                (leaf_certs if name in ("vcek", "vlek") else chain_certs).extend(certs)
    except ParseError as exc:
        rep.add("snp.endorsements", False, str(exc))
        return rep
    if r.signing_key not in (0, 1):
        rep.add(
            "snp.signing_key", False, f"SIGNING_KEY {r.signing_key}: report is not signed by a VCEK or VLEK"
        )
        return rep
    want_leaf = "SEV-VCEK" if r.signing_key == 0 else "SEV-VLEK"
    leaf = next((c for c in leaf_certs if _strip_sim(cn(c.subject))[0] == want_leaf), None)
    if leaf is None and leaf_certs:
        leaf = leaf_certs[0]  # wrong type: reported by snp.signer_type below
    if leaf is None:
        rep.add(
            "snp.signing_key",
            False,
            f"no {want_leaf[4:]} certificate supplied (pass --vcek, an extended-report cert table, or fetch it "
            "with attestation.kds)" + ("; a VLEK cannot be fetched from KDS" if r.signing_key == 1 else ""),
        )
        return rep
    rep.add("snp.signing_key", True, f"{want_leaf[4:]} certificate supplied")
    try:
        ext = parse_amd_extensions(leaf)
    except ParseError as exc:
        rep.add("snp.cert_extensions", False, str(exc))
        return rep
    rep.add(
        "snp.cert_extensions",
        True,
        f"structVersion {ext.struct_version}, productName {ext.product_name!r}, "
        f"hwID {len(ext.hwid) if ext.hwid else 0} bytes" + (f", cspID {ext.csp_id!r}" if ext.csp_id else ""),
    )

    # 3. product (and the TCB layout it implies)
    simulated = _strip_sim(cn(leaf.issuer))[1] or _strip_sim(cn(leaf.subject))[1]
    prod, stepping, source = _detect_product(r, ext, table, chain_certs, product)
    if prod not in PRODUCTS:
        rep.add(
            "snp.product",
            False,
            "cannot determine the product (v2 report without certificate product name; "
            "pass product='Milan'|'Genoa'|'Turin')",
        )
        return rep
    rep.add("snp.product", True, f"{prod} (from {source})")
    rep.fields["product"] = prod
    turin = prod == "Turin"

    # 4. chain to the pinned ARK
    ark_ok = _verify_chain(rep, r, leaf, chain_certs, prod, trust, now, simulated, pol_allow_sim=allow_sim)
    rep.simulated = simulated
    if simulated:
        rep.tee = "sim-snp"
    if crl is not None and ark_ok is not None:
        _check_crl(rep, crl, ark_ok[0], ark_ok[1], now)

    # 5. report <-> certificate
    leaf_name, _ = _strip_sim(cn(leaf.subject))
    signer_ok = leaf_name == want_leaf
    detail = f"SIGNING_KEY {SIGNING_KEYS[r.signing_key]}, certificate CN {cn(leaf.subject)!r}"
    if signer_ok and r.signing_key == 0 and ext.hwid is None:
        signer_ok, detail = False, detail + "; VCEK lacks the hwID extension"
    if signer_ok and r.signing_key == 1 and ext.hwid is not None:
        signer_ok, detail = False, detail + "; VLEK carries a hwID"
    rep.add("snp.signer_type", signer_ok, detail)

    cert_tcb = ext.tcb_components(turin)
    reported = r.tcb("reported", prod).components()
    mism = [
        f"{k}: report {reported[k]} != cert {cert_tcb[k]}" for k in reported if cert_tcb.get(k) != reported[k]
    ]
    rep.add(
        "snp.tcb.reported_matches_cert",
        not mism,
        "; ".join(mism) or f"REPORTED_TCB {r.tcb('reported', prod)} == certificate SPLs",
    )

    name_ok, name_detail = _product_name_ok(r, ext, prod, stepping)
    rep.add("snp.product_name", name_ok, name_detail)

    if r.signing_key == 1:
        rep.add("snp.chip_id", True, "skipped: VLEK-signed report (no hwID)")
    elif r.chip_id_masked:
        rep.add("snp.chip_id", True, "skipped: CHIP_ID masked (all zero)")
    elif ext.hwid is None:
        rep.add("snp.chip_id", False, "VCEK has no hwID")
    elif len(ext.hwid) == 8:
        ok = turin and r.chip_id[:8] == ext.hwid
        rep.add(
            "snp.chip_id",
            ok,
            f"CHIP_ID[0:8] {'==' if ok else '!='} 8-byte hwID {ext.hwid.hex()}"
            + ("" if turin else " (8-byte hwID on a non-Turin product)"),
        )
    else:
        ok = not turin and r.chip_id == ext.hwid
        rep.add("snp.chip_id", ok, "CHIP_ID == hwID" if ok else "CHIP_ID != certificate hwID")

    # 6. signature
    rep.add("snp.signature", *_check_signature(r, leaf))

    # 7. policy
    _policy_checks(rep, r, prod, pol, allow_sim, simulated)
    rep.fields.update(
        {
            "version": r.version,
            "vmpl": r.vmpl,
            "measurement": r.measurement.hex(),
            "report_data": r.report_data.hex(),
            "host_data": r.host_data.hex(),
            "chip_id": r.chip_id.hex(),
            "reported_tcb": r.tcb("reported", prod).components(),
            "signer": SIGNING_KEYS[r.signing_key],
        }
    )
    return rep


def _detect_product(
    r: SnpReport,
    ext: AmdExtensions,
    table: dict[str, bytes],
    chain_certs: list[x509.Certificate],
    caller: str | None,
) -> tuple[str | None, str | None, str]:
    cp = r.cpuid_product()
    caller_family = caller.split("-")[0] if caller else None
    caller_step = caller.split("-", 1)[1] if caller and "-" in caller else None
    if cp:
        return cp[0], None, f"CPUID family/model, stepping {cp[1]}"
    if "extra_platform_info" in table and len(table["extra_platform_info"]) >= 12:
        eax = int.from_bytes(table["extra_platform_info"][8:12], "little")
        p = product_from_cpuid1_eax(eax)
        if p:
            return p, caller_step, "cert-table ExtraPlatformInfo"
    if caller_family:
        return caller_family, caller_step, "caller"
    if ext.product_family:
        return ext.product_family, None, "certificate productName"
    for c in chain_certs:
        name, _ = _strip_sim(cn(c.subject))
        if name.startswith("ARK-"):
            return name[4:], None, "chain ARK name"
    return None, None, ""


def _product_name_ok(r: SnpReport, ext: AmdExtensions, prod: str, stepping: str | None) -> tuple[bool, str]:
    if not ext.product_name:
        return False, "certificate has no productName"
    name, _ = _strip_sim(ext.product_name)
    family = name.split("-")[0]
    if family != prod:
        return False, f"certificate productName {ext.product_name!r} is not a {prod}"
    cert_step = name.split("-", 1)[1] if "-" in name else None
    # Stepping compared only for v2 reports and only when both sides name one (Genoa/Turin/VLEK names carry none).
    if stepping and stepping.isdigit() and prod == "Milan":
        stepping = f"B{int(stepping)}"  # CPUID stepping 0/1 of Milan is named B0/B1 in certificates
    if r.version == 2 and stepping and cert_step and stepping != cert_step:
        return False, f"expected product stepping {stepping}, certificate says {cert_step}"
    return True, f"productName {ext.product_name!r} consistent with {prod}"


def _verify_chain(
    rep: VerificationReport,
    r: SnpReport,
    leaf: x509.Certificate,
    chain_certs: list[x509.Certificate],
    prod: str,
    trust: TrustStore,
    now: dt.datetime,
    simulated: bool,
    *,
    pol_allow_sim: bool,
) -> tuple[x509.Certificate, x509.Certificate] | None:
    """Checks ARK pin, self-signature, intermediate, leaf, validity, profile. Returns (ark, ask) if ARK trusted."""
    vlek = _strip_sim(cn(leaf.issuer))[0].startswith("SEV-VLEK-")
    prefix = SIM_PREFIX if simulated else ""
    inter_cn = prefix + (f"SEV-VLEK-{prod}" if vlek else f"SEV-{prod}")
    ark_cn = prefix + f"ARK-{prod}"
    supplied_ark = next((c for c in chain_certs if cn(c.subject) == ark_cn), None)
    supplied_inter = next((c for c in chain_certs if cn(c.subject) == inter_cn), None)

    ark: x509.Certificate | None
    if simulated:
        ark = trust.simulated_root_for(supplied_ark) if supplied_ark is not None else None
        if ark is None:
            rep.add(
                "snp.ark_pinned",
                False,
                "simulated-TEE evidence: its root is not trusted (trust it explicitly with "
                "TrustStore.with_simulated(root) / --allow-simulated ROOT.pem)"
                if supplied_ark is not None
                else f"simulated-TEE evidence without its root {ark_cn!r} in the chain",
            )
        else:
            rep.add("snp.ark_pinned", True, f"explicitly trusted SIMULATED root {cn(ark.subject)!r}")
        rep.add(
            "snp.simulated",
            pol_allow_sim,
            "evidence comes from the simulated TEE, not AMD hardware"
            + ("" if pol_allow_sim else "; refused by policy"),
            relax="allow_simulated",
        )
    else:
        pin = PINNED_SPKI.get(f"ARK-{prod}")
        ark = trust.pinned_ark(prod)
        if ark is not None and spki_sha256(ark) != pin:
            ark = None  # defensive: a TrustStore built by hand with a wrong ARK
        if ark is None:
            rep.add("snp.ark_pinned", False, f"no pinned ARK-{prod} in the trust store")
        elif supplied_ark is not None and spki_sha256(supplied_ark) != pin:
            rep.add(
                "snp.ark_pinned",
                False,
                f"the chain's {ark_cn!r} public key does not match the pinned ARK-{prod} key "
                f"(SPKI {spki_sha256(supplied_ark)[:16]}… != {pin[:16]}…): look-alike root",
            )
            ark = None
        else:
            rep.add("snp.ark_pinned", True, f"ARK-{prod} SPKI sha256 {pin[:16]}… (pinned in code)")
    if ark is None:
        return None

    inter = supplied_inter
    if inter is None and not simulated:
        inter = trust.amd.get(prod, {}).get("asvk" if vlek else "ask")
    links = [("snp.ark_self_signature", ark, ark, f"{cn(ark.subject)!r} self-signature valid")]
    if inter is not None:
        links += [
            ("snp.ask_signature", inter, ark, f"{cn(inter.subject)!r} signed by {cn(ark.subject)!r}"),
            ("snp.vcek_chain", leaf, inter, f"{cn(leaf.subject)!r} signed by {cn(inter.subject)!r}"),
        ]
    check_signatures(rep, links)
    if inter is None:
        rep.add("snp.ask_signature", False, f"no {inter_cn!r} certificate supplied or shipped")
        return None

    # Every certificate supplied with the evidence must belong to this product's chain and verify: a damaged or
    # foreign certificate is an error even when the shipped copy would have been used instead.
    allowed = {prefix + n for n in (f"ARK-{prod}", f"SEV-{prod}", f"SEV-VLEK-{prod}")}
    bad_supplied = []
    for c in chain_certs:
        if cn(c.subject) not in allowed:
            bad_supplied.append(f"unexpected certificate {cn(c.subject)!r} for {prod}")
        elif (e := chaincache.signed_by(c, ark)) is not None:
            bad_supplied.append(e)
    rep.add(
        "snp.chain_contents",
        not bad_supplied,
        "; ".join(bad_supplied)
        or f"{len(chain_certs)} supplied chain certificate(s) belong to the pinned {prod} chain",
    )

    check_validity_at(rep, "snp.cert_validity", (ark, inter, leaf), now)

    problems = []
    for c in (ark, inter, leaf):
        e = pss_profile_error(c)
        if e:
            problems.append(e)
    if cn(leaf.issuer) != inter_cn:
        problems.append(f"leaf issuer {cn(leaf.issuer)!r} != {inter_cn!r}")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        problems.append(f"leaf key is {key_description(leaf)}, expected EC P-384")
    if not simulated:
        for c in (ark, inter):
            k = c.public_key()
            if not isinstance(k, rsa.RSAPublicKey) or k.key_size != 4096:
                problems.append(f"{cn(c.subject)!r} key is {key_description(c)}, expected RSA-4096")
            dp = _crl_dp(c)
            want = f"https://kdsintf.amd.com/{'vlek' if vlek and c is inter else 'vcek'}/v1/{prod}/crl"
            if dp != [want]:
                problems.append(f"{cn(c.subject)!r} CRL distribution point {dp} != [{want!r}]")
        for c in (ark, inter, leaf):
            orgs = [a.value for a in c.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
            if orgs != [AMD_ORG]:
                problems.append(f"{cn(c.subject)!r} organisation {orgs} != [{AMD_ORG!r}]")
        if serial(leaf) != 0:
            problems.append(f"leaf serial {serial(leaf)} != 0")
    for c in (ark, inter, leaf):
        if c.version != x509.Version.v3:
            problems.append(f"{cn(c.subject)!r} is not X.509 v3")
    rep.add(
        "snp.cert_profile",
        not problems,
        "; ".join(problems) or "names, keys, RSASSA-PSS SHA-384/salt 48, CRL DP",
    )
    return ark, inter


def _crl_dp(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for dp in ext for n in (dp.full_name or [])]


def _check_crl(
    rep: VerificationReport, crl_blob: bytes, ark: x509.Certificate, inter: x509.Certificate, now: dt.datetime
) -> None:
    try:
        crl = (
            x509.load_pem_x509_crl(crl_blob)
            if crl_blob.lstrip().startswith(b"-----")
            else x509.load_der_x509_crl(crl_blob)
        )
    except ValueError as exc:
        rep.add("snp.crl", False, f"unparseable CRL: {exc}")
        return
    problems = []
    if crl.issuer != ark.subject:
        problems.append(f"CRL issuer {cn(crl.issuer)!r} is not {cn(ark.subject)!r}")
    elif not crl.is_signature_valid(ark.public_key()):
        problems.append("CRL signature by the ARK invalid")
    if crl.last_update_utc > now:
        problems.append("CRL not yet valid")
    if crl.next_update_utc is None or crl.next_update_utc < now:
        problems.append("CRL past its nextUpdate: refuse to use it")
    if crl.get_revoked_certificate_by_serial_number(serial(inter)) is not None:
        problems.append(f"{cn(inter.subject)!r} serial 0x{serial(inter):x} is revoked")
    rep.add(
        "snp.crl", not problems, "; ".join(problems) or "ARK-signed CRL current; intermediate not revoked"
    )


def _check_signature(r: SnpReport, leaf: x509.Certificate) -> tuple[bool, str]:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        return False, f"certificate key is {key_description(leaf)}, not EC P-384"
    try:
        key.verify(r.signature_der(), r.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        return False, "ECDSA P-384/SHA-384 signature over [0, 0x2A0) does not verify with the certificate key"
    return True, "ECDSA P-384/SHA-384 over [0, 0x2A0) valid"


def _le_all(a: dict[str, int], b: dict[str, int]) -> list[str]:
    return [f"{k} {a[k]} > {b[k]}" for k in a if a[k] > b[k]]


def _policy_checks(
    rep: VerificationReport, r: SnpReport, prod: str, pol: object, allow_sim: bool, simulated: bool
) -> None:
    from .policy import SnpPolicy

    assert isinstance(pol, SnpPolicy)
    debug = r.policy_flag("DEBUG")
    rep.add(
        "snp.policy.debug",
        not debug or pol.allow_debug,
        ("guest POLICY allows DEBUG" + (" (permitted by policy)" if pol.allow_debug else "; refused"))
        if debug
        else "DEBUG not allowed by the guest policy",
        relax="snp.allow_debug",
    )
    ma = r.policy_flag("MIGRATE_MA")
    rep.add(
        "snp.policy.migrate_ma",
        not ma or pol.allow_migrate_ma,
        "guest POLICY allows a migration agent" if ma else "no migration agent allowed",
        relax="snp.allow_migrate_ma",
    )
    smt = r.policy_flag("SMT")
    rep.add(
        "snp.policy.smt",
        not smt or pol.allow_smt,
        "guest POLICY allows SMT" if smt else "SMT not allowed by the guest policy",
        relax="snp.allow_smt",
    )
    cxl = r.policy_flag("CXL_ALLOW")
    rep.add(
        "snp.policy.cxl",
        not cxl or pol.allow_cxl,
        "guest POLICY allows CXL memory" if cxl else "CXL not allowed",
        relax="snp.allow_cxl",
    )
    missing = [b for b in pol.require_policy_bits if not r.policy_flag(b)]
    if not pol.require_policy_bits:
        rep.skip("snp.policy.required_bits", "not constrained (no snp.require_policy_bits)")
    else:
        rep.add(
            "snp.policy.required_bits",
            not missing,
            f"required guest POLICY bits missing: {missing}"
            if missing
            else f"required guest POLICY bits present: {pol.require_policy_bits}",
            relax="snp.require_policy_bits",
        )
    abi_ok = (r.abi_major, r.abi_minor) >= pol.minimum_abi
    rep.add(
        "snp.policy.abi",
        abi_ok,
        f"ABI {r.abi_major}.{r.abi_minor}, minimum {pol.minimum_abi[0]}.{pol.minimum_abi[1]}",
        relax="snp.minimum_abi",
    )
    rep.add("snp.policy.vmpl", r.vmpl in pol.vmpl, f"VMPL {r.vmpl}, allowed {pol.vmpl}", relax="snp.vmpl")
    rep.add(
        "snp.policy.product", prod in pol.products, f"{prod}, allowed {pol.products}", relax="snp.products"
    )

    cur, com = r.tcb("current", prod).components(), r.tcb("committed", prod).components()
    if pol.permit_provisional_firmware:
        bad = _le_all(com, cur)
        if r.committed_version > r.current_version:
            bad.append(f"committed firmware {r.committed_version} > current {r.current_version}")
        rep.add(
            "snp.tcb.committed_vs_current",
            not bad,
            "; ".join(bad) or "COMMITTED <= CURRENT (provisional permitted)",
        )
    else:
        same = r.committed_tcb_raw == r.current_tcb_raw and r.committed_version == r.current_version
        rep.add(
            "snp.tcb.committed_vs_current",
            same,
            "COMMITTED == CURRENT"
            if same
            else f"CURRENT_TCB {r.tcb('current', prod)} / firmware {fw(r.current_version)} differs from "
            f"COMMITTED_TCB {r.tcb('committed', prod)} / {fw(r.committed_version)} (provisional firmware)",
            relax="snp.permit_provisional_firmware",
        )
    reported = r.tcb("reported", prod).components()
    bad = _le_all(reported, cur)
    rep.add("snp.tcb.cert_le_current", not bad, "; ".join(bad) or "REPORTED (certificate) TCB <= CURRENT_TCB")
    minimum = {k: v for k, v in pol.minimum_tcb.items() if k in reported}
    bad = [f"{k} {reported[k]} < minimum {v}" for k, v in minimum.items() if reported[k] < v]
    build = r.committed_version[2]
    # a zero minimum constrains nothing: SKIP with the value rather than a PASS that checked nothing
    if not any(minimum.values()):
        rep.skip("snp.tcb.minimum", f"not constrained (no snp.minimum_tcb) — REPORTED_TCB {r.tcb('reported', prod)}")
    else:
        rep.add(
            "snp.tcb.minimum",
            not bad,
            "; ".join(bad) or f"REPORTED_TCB >= minimum {minimum}",
            relax="snp.minimum_tcb",
        )
    if not pol.minimum_build:
        rep.skip("snp.policy.minimum_build", f"not constrained (no snp.minimum_build) — build {build}")
    else:
        rep.add(
            "snp.policy.minimum_build",
            build >= pol.minimum_build,
            f"committed firmware build {build}, minimum {pol.minimum_build}",
            relax="snp.minimum_build",
        )
    if not pol.minimum_guest_svn:
        rep.skip("snp.policy.guest_svn", f"not constrained (no snp.minimum_guest_svn) — GUEST_SVN {r.guest_svn}")
    else:
        rep.add(
            "snp.policy.guest_svn",
            r.guest_svn >= pol.minimum_guest_svn,
            f"GUEST_SVN {r.guest_svn}, minimum {pol.minimum_guest_svn}",
            relax="snp.minimum_guest_svn",
        )

    exact = functools.partial(check_reference, rep)
    exact("snp.policy.measurement", "measurement", r.measurement, pol.measurement)
    exact("snp.policy.host_data", "host_data", r.host_data, pol.host_data)
    exact("snp.policy.report_data", "report_data", r.report_data, pol.report_data)
    exact("snp.policy.family_id", "family_id", r.family_id, pol.family_id)
    exact("snp.policy.image_id", "image_id", r.image_id, pol.image_id)
    exact("snp.policy.id_key_digest", "id_key_digests", r.id_key_digest, pol.id_key_digests or None)
    if pol.author_key_digests:
        ok = r.author_key_en and r.author_key_digest in pol.author_key_digests
        rep.add(
            "snp.policy.author_key_digest",
            ok,
            "author key trusted"
            if ok
            else "AUTHOR_KEY_EN clear or author key digest not in snp.author_key_digests",
            relax="snp.author_key_digests",
        )
    else:
        rep.skip("snp.policy.author_key_digest", "not constrained (no snp.author_key_digests)")
    del allow_sim, simulated
