"""The policy / reference-values JSON Schema (attestation/policy.schema.json, copied to docs/policy.schema.json):
it is a valid draft 2020-12 schema, it accepts every policy the tests, the docs and `aocu measure` produce,
it accepts exactly what the parser in attestation/policy.py accepts, and a bad file fails with one line
naming the file, the JSON path and the reason."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path
from unittest import mock

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import policy as policy_mod
from attestation.measure import reference_values
from attestation.policy import Policy, PolicyError, schema, validate
from cu.cli import main

REPO = Path(__file__).resolve().parent.parent
PACKAGE_SCHEMA = REPO / "attestation" / "policy.schema.json"
DOCS_SCHEMA = REPO / "docs" / "policy.schema.json"
OVMF = Path("/usr/share/ovmf/OVMF.fd")


def schema_ok(doc: object) -> bool:
    try:
        validate(doc)
        return True
    except PolicyError:
        return False


def parser_ok(doc: object) -> bool:
    """The parser of attestation/policy.py alone, without the schema step."""
    with mock.patch.object(policy_mod, "validate", lambda *_a, **_k: None):
        try:
            Policy.from_json(doc)
            return True
        except PolicyError:
            return False


# -- the schema itself -------------------------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema():
    doc = json.loads(PACKAGE_SCHEMA.read_text())
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)
    assert schema() == doc  # what the package loads is this file


def test_docs_copy_is_identical_to_the_package_schema():
    assert DOCS_SCHEMA.read_bytes() == PACKAGE_SCHEMA.read_bytes(), (
        "docs/policy.schema.json must be a byte-for-byte copy of attestation/policy.schema.json"
    )


def test_schema_is_package_data():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "policy.schema.json" in project["tool"]["setuptools"]["package-data"]["attestation"]
    assert any(d.split(">")[0].split("=")[0].strip() == "jsonschema" for d in project["project"]["dependencies"])


# -- documents that must validate --------------------------------------------------------------------------------

FULL_EXAMPLE = {
    "snp": {
        "measurement": ["ab" * 48],
        "host_data": "00" * 32,
        "report_data": "11" * 64,
        "vmpl": [0],
        "allow_debug": False,
        "permit_provisional_firmware": False,
        "minimum_tcb": {"fmc": 0, "bl": 0, "tee": 0, "snp": 0, "ucode": 0},
        "minimum_build": 0,
        "products": ["Milan", "Genoa", "Turin"],
        "id_key_digests": [],
        "author_key_digests": [],
        "allow_migrate_ma": False,
        "minimum_guest_svn": 0,
        "family_id": "00" * 16,
        "image_id": "00" * 16,
        "minimum_abi": "1.55",
        "allow_smt": True,
        "allow_cxl": False,
        "require_policy_bits": ["SINGLE_SOCKET", "MEM_AES_256_XTS"],
    },
    "tdx": {
        "mrtd": ["cd" * 48],
        "rtmr0": "00" * 48,
        "rtmr1": "00" * 48,
        "rtmr2": "00" * 48,
        "rtmr3": "00" * 48,
        "mr_config_id": "00" * 48,
        "allow_debug": False,
        "accepted_tcb_status": ["UpToDate", "NotEvaluated"],
        "report_data": "22" * 64,
        "mr_owner": "00" * 48,
        "mr_owner_config": "00" * 48,
        "mr_seam": "AB" * 48,
        "minimum_tee_tcb_svn": "01" * 16,
    },
    "allow_simulated": False,
    "$schema": "../attestation/policy.schema.json",
    "comment": "every key",
}


def _literal_policies_in_tests() -> list[tuple[str, dict]]:
    """Dict literals the test suite turns into policies (`Policy.from_json({...})`, or `json.dumps({...})` of a
    policy-shaped dict), and `policy(key=value, ...)` of tests/test_attestation_snp.py, except inside
    `pytest.raises` blocks."""
    found: list[tuple[str, dict]] = []

    class Visitor(ast.NodeVisitor):
        def __init__(self, name: str) -> None:
            self.name, self.raises = name, 0

        def visit_With(self, node: ast.With) -> None:
            raises = any("raises" in ast.unparse(i.context_expr) for i in node.items)
            self.raises += raises
            self.generic_visit(node)
            self.raises -= raises

        def visit_Call(self, node: ast.Call) -> None:
            fn = ast.unparse(node.func)
            if not self.raises and fn == "policy" and self.name == "test_attestation_snp.py" and node.keywords:
                # tests/test_attestation_snp.py: policy(**snp) == Policy.from_json({"snp": snp})
                try:
                    found.append((f"{self.name}:{node.lineno}", {"snp": {k.arg: _literal(k.value, k.arg)
                                                                          for k in node.keywords}}))
                except _Computed:
                    pass
            if not self.raises and fn in ("Policy.from_json", "json.dumps") and node.args:
                arg = node.args[0]
                try:
                    doc = _literal(arg) if isinstance(arg, ast.Dict) else None
                except _Computed:
                    doc = None
                if isinstance(doc, dict) and doc and set(doc) <= {"snp", "tdx", "allow_simulated"}:
                    found.append((f"{self.name}:{node.lineno}", doc))
            self.generic_visit(node)

    for path in sorted((REPO / "tests").glob("test_*.py")):
        Visitor(path.name).visit(ast.parse(path.read_text()))
    return found


# stand-ins for hex values the tests compute (`m.hex()`, `rd.hex()`): a valid value for that key; a document with
# any other computed value (e.g. `{"snp": snp}`) is skipped
_SIZES = {"host_data": 32, "report_data": 64, "family_id": 16, "image_id": 16, "minimum_tee_tcb_svn": 16}
_HEX_KEYS = {"measurement", "mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mr_config_id", "mr_owner",
             "mr_owner_config", "mr_seam", "id_key_digests", "author_key_digests", *_SIZES}


class _Computed(Exception):
    pass


def _literal(node: ast.AST, key: object = None) -> object:
    if isinstance(node, ast.Dict):  # `**name` entries (key None) are left out
        pairs = [(_literal(k), v) for k, v in zip(node.keys, node.values, strict=True) if k is not None]
        return {k: _literal(v, k) for k, v in pairs}
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e, key) for e in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Add):
        a, b = _literal(node.left, key), _literal(node.right, key)
        return a * b if isinstance(node.op, ast.Mult) else a + b  # type: ignore[operator]
    try:
        return ast.literal_eval(node)
    except ValueError:
        if key not in _HEX_KEYS:
            raise _Computed(ast.unparse(node)) from None
        return "00" * _SIZES.get(str(key), 48)


def test_policies_used_by_the_tests_validate():
    docs = _literal_policies_in_tests()
    assert len(docs) >= 10, docs  # the attestation tests build many; finding none means the scan broke
    bad = [(where, doc, str(_error(doc))) for where, doc in docs if not schema_ok(doc)]
    assert not bad


def _error(doc: object) -> PolicyError | None:
    try:
        validate(doc)
    except PolicyError as exc:
        return exc
    return None


def test_documented_examples_and_reference_values_validate():
    assert schema_ok(FULL_EXAMPLE) and parser_ok(FULL_EXAMPLE)
    assert schema_ok({})
    for doc in (
        reference_values(snp_measurements=[b"\x01" * 48]),
        reference_values(mrtd=[b"\x02" * 48]),
        reference_values(snp_measurements=[b"\x01" * 48, b"\x03" * 48], mrtd=[b"\x02" * 48]),
    ):
        Policy.from_json(doc)
    # every ```json block of docs/POLICY.md is a valid policy
    blocks = re.findall(r"```json\n(.*?)```", (REPO / "docs" / "POLICY.md").read_text(), re.S)
    assert blocks
    for text in blocks:
        Policy.from_json(json.loads(text))


@pytest.mark.skipif(not OVMF.is_file(), reason="Debian package ovmf not installed")
def test_aocu_measure_output_validates(tmp_path):
    rv = tmp_path / "rv.json"
    args = ["measure", "--ovmf", str(OVMF), "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--tdx", "--tdvf", str(OVMF)]
    assert main([*args, "-o", str(rv)]) == 0
    doc = json.loads(rv.read_text())
    assert set(doc) == {"snp", "tdx"}
    validate(doc, str(rv))
    p = Policy.from_file(rv)
    assert len(p.snp.measurement or []) == 1 and len(p.tdx.mrtd or []) == 1


# -- bad files: one line, file + JSON path + reason --------------------------------------------------------------

BAD = [
    ({"snp": {"allow_debug": "yes"}}, "$.snp.allow_debug: must be true or false"),
    ({"tdx": {"mrtd": 5}}, "$.tdx.mrtd: must be a string, a list or null"),
    ({"snp": {"minimum_build": 1.0}}, "$.snp.minimum_build: must be an integer"),
    ({"snp": {"minimum_abi": 1.5}}, "$.snp.minimum_abi: must be a string"),
    ({"snp": {"minimum_abi": "1"}}, '$.snp.minimum_abi: must be "MAJOR.MINOR"'),
    ({"snp": None}, "$.snp: must be an object"),
    ({"snpp": {}}, "$: unknown key 'snpp' (allowed: $schema, comment, snp, tdx, allow_simulated)"),
    ({"snp": {"alow_debug": True}}, "$.snp: unknown key 'alow_debug'"),
    ({"snp": {"minimum_tcb": {"microcode": 1}}}, "$.snp.minimum_tcb: unknown key 'microcode'"),
    ({"snp": {"measurement": ["ab" * 47]}}, "$.snp.measurement[0]: must be 48 bytes (96 hex digits), got 94"),
    ({"snp": {"measurement": "ab" * 49}}, "$.snp.measurement: must be 48 bytes (96 hex digits), got 98"),
    ({"snp": {"host_data": "00" * 48}}, "$.snp.host_data: must be 32 bytes (64 hex digits), got 96"),
    ({"tdx": {"minimum_tee_tcb_svn": "0x" + "00" * 15}}, "$.tdx.minimum_tee_tcb_svn: must be hex digits only"),
    ({"tdx": {"rtmr0": "ab" * 47 + " a"}}, "$.tdx.rtmr0: must be hex digits only"),
    ({"tdx": {"report_data": "zz" * 64}}, "$.tdx.report_data: must be hex digits only"),
    ({"snp": {"vmpl": [4]}}, "$.snp.vmpl[0]: must be an integer in [0, 3]"),
    ({"snp": {"minimum_tcb": {"bl": 256}}}, "$.snp.minimum_tcb.bl: must be an integer in [0, 255]"),
    ({"snp": {"products": []}}, "$.snp.products: must not be an empty list"),
    ({"snp": {"products": ["Rome"]}}, "$.snp.products[0]: 'Rome' is not one of Milan, Genoa, Turin"),
    ({"tdx": {"accepted_tcb_status": ["Fine"]}}, "$.tdx.accepted_tcb_status[0]: 'Fine' is not one of UpToDate"),
    ({"snp": {"require_policy_bits": ["DEBUG"]}}, "$.snp.require_policy_bits[0]: 'DEBUG' is not one of"),
    ({"snp": {"id_key_digests": "ab" * 48}}, "$.snp.id_key_digests: must be a list or null"),
    ([], "$: the top level must be a JSON object"),
]


@pytest.mark.parametrize("doc,expected", BAD, ids=[e.split(":")[0] + f"-{i}" for i, (_, e) in enumerate(BAD)])
def test_bad_policy_files_fail_with_one_clear_line(tmp_path, doc, expected):
    path = tmp_path / "rv.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError) as e:
        Policy.from_file(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"policy {path}: {expected}"), msg
    assert not parser_ok(doc)  # the parser alone refuses it as well


def test_unreadable_and_malformed_files(tmp_path):
    path = tmp_path / "rv.json"
    with pytest.raises(PolicyError, match=rf"^policy {re.escape(str(path))}: cannot read it"):
        Policy.from_file(path)
    path.write_text("{nope")
    with pytest.raises(PolicyError, match=rf"^policy {re.escape(str(path))}: not valid JSON"):
        Policy.from_file(path)


def test_cli_prints_the_schema_error(tmp_path, capsys):
    evidence = tmp_path / "report.bin"
    evidence.write_bytes(b"\x07" * 1184)
    rv = tmp_path / "rv.json"
    rv.write_text('{"snp": {"measurement": ["abcd"]}}')
    assert main(["evidence", "verify", str(evidence), "--policy", str(rv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"policy {rv}: $.snp.measurement[0]: must be 48 bytes (96 hex digits)" in err[0]


# -- the schema and the parser accept exactly the same documents -------------------------------------------------

_HEXES = ["ab" * n for n in (16, 32, 48, 64)] + ["AB" * 48, "ab" * 47, "ab" * 49, "ab" * 47 + " a", "ab " * 48,
                                                  "0x" + "ab" * 47, "zz" * 48, "", "abc", " " + "ab" * 48]
_HEX = st.sampled_from(_HEXES)
_BOOL = st.sampled_from([True, False, None, 0, 1, "true"])
_INT = st.sampled_from([0, 1, 3, 4, 255, 256, -1, 2**32 - 1, 2**32, 1.0, True, None, "1"])
_HEX_SET = st.one_of(_HEX, st.lists(_HEX, max_size=2), st.sampled_from([None, 5, [None], {}]))
_HEX_LIST = st.one_of(st.lists(_HEX, max_size=2), _HEX, st.sampled_from([None, 5]))
_OPT_HEX = st.one_of(_HEX, st.sampled_from([None, 5, [], True]))
_ANY = st.sampled_from([None, True, 0, "x", [], {}])


def _obj(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    extra = st.dictionaries(st.sampled_from(["alow_debug", "rtmr4", "Snp", ""]), _ANY, max_size=1)
    known = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(
        st.builds(lambda k, e: {**k, **e}, known, st.one_of(st.just({}), extra)),
        _ANY,
    )


_SNP = _obj({
    "measurement": _HEX_SET, "host_data": _OPT_HEX, "report_data": _OPT_HEX,
    "vmpl": st.one_of(_INT, st.lists(_INT, max_size=3)), "allow_debug": _BOOL,
    "permit_provisional_firmware": _BOOL,
    "minimum_tcb": _obj({k: _INT for k in ("fmc", "bl", "tee", "snp", "ucode")}),
    "minimum_build": _INT,
    "products": st.one_of(st.lists(st.sampled_from(["Milan", "Genoa", "Turin", "Rome"]), max_size=3), _ANY),
    "id_key_digests": _HEX_LIST, "author_key_digests": _HEX_LIST, "allow_migrate_ma": _BOOL,
    "minimum_guest_svn": _INT, "family_id": _OPT_HEX, "image_id": _OPT_HEX,
    # "1.2\n": Python's re lets `$` match before a final newline (ECMA-262, the schema's regex dialect, does
    # not); the parser refuses it, so the only difference is python-jsonschema's, not the schema's.
    "minimum_abi": st.sampled_from(["0.0", "1.55", "1", "1.2.3", 1.5, None, " 1.2", "+1.2", "1000.0", "a.b", 1]),
    "allow_smt": _BOOL, "allow_cxl": _BOOL,
    "require_policy_bits": st.one_of(st.lists(st.sampled_from(["SINGLE_SOCKET", "RAPL_DIS", "DEBUG"]), max_size=2),
                                     _ANY),
})  # fmt: skip
_TDX = _obj({
    "mrtd": _HEX_SET, **{f"rtmr{i}": _OPT_HEX for i in range(4)}, "mr_config_id": _OPT_HEX, "allow_debug": _BOOL,
    "accepted_tcb_status": st.one_of(
        st.lists(st.sampled_from(["UpToDate", "NotEvaluated", "OutOfDate", "Fine"]), max_size=2), _ANY),
    "report_data": _OPT_HEX, "mr_owner": _OPT_HEX, "mr_owner_config": _OPT_HEX, "mr_seam": _OPT_HEX,
    "minimum_tee_tcb_svn": _OPT_HEX,
})  # fmt: skip
_DOC = st.one_of(
    _obj({"snp": _SNP, "tdx": _TDX, "allow_simulated": _BOOL, "$schema": _ANY, "comment": _ANY, "_comment": _ANY}),
    st.sampled_from([[], "x", 1]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOC)
def test_schema_and_parser_agree(doc):
    assert schema_ok(doc) == parser_ok(doc), (doc, _error(doc))


def test_single_values_and_the_newline_corner():
    valid = {"snp": {"measurement": "ab" * 48, "vmpl": 1, "minimum_abi": "1.55"}, "tdx": {"mrtd": []}}
    assert schema_ok(valid) and parser_ok(valid)
    p = Policy.from_json(valid)
    assert p.snp.measurement == [bytes.fromhex("ab" * 48)] and p.snp.vmpl == [1] and p.snp.minimum_abi == (1, 55)
    with pytest.raises(PolicyError, match="minimum_abi"):  # refused by the parser if not by python-jsonschema
        Policy.from_json({"snp": {"minimum_abi": "1.2\n"}})
