"""RFC 9421 Appendix B.2 vectors (keys from B.1), RFC 9530 Content-Digest, and malformed signature headers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from cu.codec import CodecError
from cu.codec.digest import content_digest, parse_content_digest, verify_content_digest
from cu.codec.rfc9421 import HTTPMessage, parse_signature_headers, sign_message, verify_message

# RFC 9421 B.1.2 test-key-rsa-pss (public), B.1.3 test-key-ecc-p256 (public), B.1.4 test-key-ed25519,
# B.1.5 test-shared-secret.
RSA_PSS_PUBLIC = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAr4tmm3r20Wd/PbqvP1s2
+QEtvpuRaV8Yq40gjUR8y2Rjxa6dpG2GXHbPfvMs8ct+Lh1GH45x28Rw3Ry53mm+
oAXjyQ86OnDkZ5N8lYbggD4O3w6M6pAvLkhk95AndTrifbIFPNU8PPMO7OyrFAHq
gDsznjPFmTOtCEcN2Z1FpWgchwuYLPL+Wokqltd11nqqzi+bJ9cvSKADYdUAAN5W
Utzdpiy6LbTgSxP7ociU4Tn0g5I6aDZJ7A8Lzo0KSyZYoA485mqcO0GVAdVw9lq4
aOT9v6d+nb4bnNkQVklLQ3fVAvJm+xdDOp9LCNCN48V2pnDOkFV6+U9nV5oyc6XI
2wIDAQAB
-----END PUBLIC KEY-----"""
ECC_P256_PUBLIC = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf
w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==
-----END PUBLIC KEY-----"""
ED25519_PRIVATE = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----"""
SHARED_SECRET = base64.b64decode(
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)
REQUEST_DIGEST = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
RESPONSE_DIGEST = "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:"

VECTORS = {
    "sig-b21": ('();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"',
                "d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopemLJcWDy/lkbbHAve4cRAtx31Iq786U7it++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCbzR72rgFWhzx2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6UnCh8jYzuVG5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98Xw9Q==",
                "rsa-pss-sha512"),
    "sig-b22": ('("@authority" "content-digest" "@query-param";name="Pet");created=1618884473;keyid="test-key-rsa-pss";tag="header-example"',
                "LjbtqUbfmvjj5C5kr1Ugj4PmLYvx9wVjZvD9GsTT4F7GrcQEdJzgI9qHxICagShLRiLMlAJjtq6N4CDfKtjvuJyE5qH7KT8UCMkSowOB4+ECxCmT8rtAmj/0PIXxi0A0nxKyB09RNrCQibbUjsLS/2YyFYXEu4TRJQzRw1rLEuEfY17SARYhpTlaqwZVtR8NV7+4UKkjqpcAoFqWFQh62s7Cl+H2fjBSpqfZUJcsIk4N6wiKYd4je2U/lankenQ99PZfB4jY3I5rSV2DSBVkSFsURIjYErOs0tFTQosMTAoxk//0RoKUqiYY8Bh0aaUEb0rQl3/XaVe4bXTugEjHSw==",
                "rsa-pss-sha512"),
    "sig-b23": ('("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"',
                "bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==",
                "rsa-pss-sha512"),
    "sig-b24": ('("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256"',
                "wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw==",
                "ecdsa-p256-sha256"),
    "sig-b25": ('("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"',
                "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=", "hmac-sha256"),
    "sig-b26": ('("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"',
                "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==", "ed25519"),
}

B26_BASE = (
    b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@method": POST\n"@path": /foo\n"@authority": example.com\n'
    b'"content-type": application/json\n"content-length": 18\n'
    b'"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");'
    b'created=1618884473;keyid="test-key-ed25519"'
)
B22_BASE = (
    '"@authority": example.com\n"content-digest": ' + REQUEST_DIGEST + '\n"@query-param";name="Pet": dog\n'
    '"@signature-params": ("@authority" "content-digest" "@query-param";name="Pet");created=1618884473;'
    'keyid="test-key-rsa-pss";tag="header-example"'
).encode()


def make_request(extra=()):
    return HTTPMessage(
        method="POST", url="https://example.com/foo?param=Value&Pet=dog", body=b'{"hello": "world"}',
        headers=[("Host", "example.com"), ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
                 ("Content-Type", "application/json"), ("Content-Digest", REQUEST_DIGEST),
                 ("Content-Length", "18"), *extra],
    )


def make_response(extra=()):
    return HTTPMessage(
        status=200, body=b'{"message": "good dog"}',
        headers=[("Date", "Tue, 20 Apr 2021 02:07:56 GMT"), ("Content-Type", "application/json"),
                 ("Content-Digest", RESPONSE_DIGEST), ("Content-Length", "23"), *extra],
    )


def _keys():
    ed = serialization.load_pem_private_key(ED25519_PRIVATE, None)
    return {
        "test-key-rsa-pss": ("rsa-pss-sha512", serialization.load_pem_public_key(RSA_PSS_PUBLIC)),
        "test-key-ecc-p256": ("ecdsa-p256-sha256", serialization.load_pem_public_key(ECC_P256_PUBLIC)),
        "test-key-ed25519": ("ed25519", ed.public_key()),
        "test-shared-secret": ("hmac-sha256", SHARED_SECRET),
    }


def resolver(keyid, alg):
    if keyid not in _keys():
        raise CodecError(f"unknown key {keyid}")
    return _keys()[keyid]


def _signed(label):
    sig_input, sig, _ = VECTORS[label]
    extra = [("Signature-Input", f"{label}={sig_input}"), ("Signature", f"{label}=:{sig}:")]
    return make_response(extra) if label == "sig-b24" else make_request(extra)


@pytest.mark.parametrize("label", sorted(VECTORS))
def test_appendix_b2_vectors_verify(label):
    msg = _signed(label)
    (res,) = verify_message(msg, resolver, now=1618884473)
    assert res.label == label and res.valid is True and res.alg == VECTORS[label][2]
    # one flipped bit in the signature is refused
    sig = bytearray(base64.b64decode(VECTORS[label][1]))
    sig[len(sig) // 2] ^= 1
    msg.set_header("Signature", f"{label}=:{base64.b64encode(bytes(sig)).decode()}:")
    assert verify_message(msg, resolver, now=1618884473)[0].valid is False


def test_appendix_b2_bases_are_the_published_ones():
    assert verify_message(_signed("sig-b26"), resolver)[0].base == B26_BASE
    assert verify_message(_signed("sig-b22"), resolver)[0].base == B22_BASE


def test_deterministic_vectors_reproduced_byte_for_byte():
    ed = serialization.load_pem_private_key(ED25519_PRIVATE, None)
    out = sign_message(make_request(), label="sig-b26", key=ed, alg="ed25519", keyid="test-key-ed25519",
                       created=1618884473,
                       components=["date", "@method", "@path", "@authority", "content-type", "content-length"])
    assert out.signature_input == VECTORS["sig-b26"][0]
    assert base64.b64encode(out.signature).decode() == VECTORS["sig-b26"][1]
    assert out.base == B26_BASE
    out = sign_message(make_request(), label="sig-b25", key=SHARED_SECRET, alg="hmac-sha256",
                       keyid="test-shared-secret", created=1618884473,
                       components=["date", "@authority", "content-type"])
    assert out.signature_input == VECTORS["sig-b25"][0]
    assert base64.b64encode(out.signature).decode() == VECTORS["sig-b25"][1]


def test_rsa_pss_and_ecdsa_sign_and_verify_round_trip():
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    keys = {"k-rsa": ("rsa-pss-sha512", rsa.generate_private_key(65537, 2048)),
            "k-ec": ("ecdsa-p256-sha256", ec.generate_private_key(ec.SECP256R1()))}
    for keyid, (alg, key) in keys.items():
        msg = make_request()
        sign_message(msg, label="s", key=key, alg=alg, keyid=keyid, components=["@method", "@authority", "content-digest"])
        (res,) = verify_message(msg, lambda k, a: keys[k], required=["content-digest"])
        assert res.valid
        (res,) = verify_message(msg, lambda k, a: keys[k], required=["@path"])
        assert not res.valid  # a required component that is not covered


def test_cross_check_with_http_message_signatures_package():
    """The PyPI `http-message-signatures` package verifies what aocu signs (ed25519 and hmac)."""
    hms = pytest.importorskip("http_message_signatures")
    requests = pytest.importorskip("requests")
    ed = serialization.load_pem_private_key(ED25519_PRIVATE, None)

    req = requests.Request("POST", "https://example.com/foo?param=Value&Pet=dog", data=b'{"hello": "world"}',
                           headers={"Date": "Tue, 20 Apr 2021 02:07:55 GMT", "Content-Type": "application/json",
                                    "Content-Digest": REQUEST_DIGEST}).prepare()
    ours = HTTPMessage(method="POST", url=req.url, headers=list(req.headers.items()))
    sign_message(ours, label="pyhms", key=ed, alg="ed25519", keyid="test-key-ed25519", created=1618884473,
                 components=["@method", "@authority", "@path", "content-digest", "date"])
    req.headers["Signature-Input"] = ours.header("Signature-Input")
    req.headers["Signature"] = ours.header("Signature")

    class Resolver(hms.HTTPSignatureKeyResolver):
        def resolve_public_key(self, key_id):
            return ed.public_key()

    verifier = hms.HTTPMessageVerifier(signature_algorithm=hms.algorithms.ED25519, key_resolver=Resolver())
    (result,) = verifier.verify(req, max_age=__import__("datetime").timedelta(days=365 * 100))
    assert result.label == "pyhms"
    # and aocu verifies what the package signs
    req2 = requests.Request("GET", "https://example.com/x", headers={"Date": "now"}).prepare()

    class SecretResolver(hms.HTTPSignatureKeyResolver):
        def resolve_private_key(self, key_id):
            return SHARED_SECRET

        def resolve_public_key(self, key_id):
            return SHARED_SECRET

    hms.HTTPMessageSigner(signature_algorithm=hms.algorithms.HMAC_SHA256, key_resolver=SecretResolver()).sign(
        req2, key_id="test-shared-secret", covered_component_ids=("@method", "@authority", "date"), label="theirs")
    theirs = HTTPMessage(method="GET", url=req2.url, headers=list(req2.headers.items()))
    (res,) = verify_message(theirs, resolver)
    assert res.valid and res.label == "theirs"


def test_content_digest_rfc9530():
    body = b'{"hello": "world"}'
    assert verify_content_digest(REQUEST_DIGEST, body)
    assert verify_content_digest(content_digest(body, ("sha-256", "sha-512")), body)
    assert not verify_content_digest(REQUEST_DIGEST, body + b"\n")
    # RFC 9530 §2 example: {"hello": "world"} + LF
    lf = hashlib.sha256(b'{"hello": "world"}\n').digest()
    assert content_digest(b'{"hello": "world"}\n') == "sha-256=:" + base64.b64encode(lf).decode() + ":"
    assert base64.b64encode(lf).decode() == "RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg="
    # the base64url variant ao-core-libs emits is accepted
    url = "sha-256=:" + base64.urlsafe_b64encode(lf).decode().rstrip("=") + ":"
    assert parse_content_digest(url) == [("sha-256", lf)]
    with pytest.raises(CodecError):
        verify_content_digest("md5=:AAAA:", body)
    with pytest.raises(CodecError):
        parse_content_digest("sha-256=not-bytes")


@pytest.mark.parametrize(
    ("sig_input", "sig", "match"),
    [
        ('a=("@method" "@method");keyid="test-shared-secret"', "a=:AAAA:", "duplicate"),
        ('a=("@method");keyid="test-shared-secret"', "b=:AAAA:", "labels differ"),
        ('a=("@method"', "a=:AAAA:", "dictionary"),
        ('a="@method";keyid="test-shared-secret"', "a=:AAAA:", "inner list"),
        ('a=(@method);keyid="test-shared-secret"', "a=:AAAA:", "dictionary|sf-strings"),
        ('a=("@method");keyid="test-shared-secret"', "a=AAAA", "byte sequence"),
        ('a=("@method");keyid="test-shared-secret"', "a=:AA!A:", "dictionary"),
        ('a=("@nonsense");keyid="test-shared-secret"', "a=:AAAA:", "unknown derived"),
        ('a=("x-missing");keyid="test-shared-secret"', "a=:AAAA:", "absent"),
        ('a=("@status");keyid="test-shared-secret"', "a=:AAAA:", "responses"),
        ('a=("Date");keyid="test-shared-secret"', "a=:AAAA:", "lowercase"),
        ('a=("date";foo);keyid="test-shared-secret"', "a=:AAAA:", "unknown parameter"),
        ('a=("@query-param";name="nope");keyid="test-shared-secret"', "a=:AAAA:", "exactly one"),
        ('a=("@signature-params");keyid="test-shared-secret"', "a=:AAAA:", "derived|signature-params"),
    ],
)
def test_malformed_signature_headers(sig_input, sig, match):
    msg = make_request([("Signature-Input", sig_input), ("Signature", sig)])
    with pytest.raises(CodecError, match=match):
        verify_message(msg, resolver)


def test_missing_headers_and_expiry():
    with pytest.raises(CodecError):
        verify_message(make_request(), resolver)
    msg = make_request()
    sign_message(msg, label="e", key=SHARED_SECRET, alg="hmac-sha256", keyid="test-shared-secret",
                 created=1000, expires=2000, components=["@method"])
    assert verify_message(msg, resolver, now=1500)[0].valid
    assert not verify_message(msg, resolver, now=2500)[0].valid
    assert not verify_message(msg, resolver, now=1500 + 10**6, max_age=60)[0].valid


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_fuzz_signature_header_parser(sig_input, sig):
    msg = make_request([("Signature-Input", sig_input), ("Signature", sig)])
    try:
        parse_signature_headers(msg)
        verify_message(msg, resolver)
    except CodecError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_content_digest_parser(value):
    try:
        verify_content_digest(value, b"x")
    except CodecError:
        pass


# ------------------------------------------------------------------------------------------------
# the npm `http-message-signatures` package (what ao-core-libs signs with) as an RFC 9421 peer

PEERS = Path(__file__).resolve().parent / "peers"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None or not (PEERS / "node_modules" / "http-message-signatures").is_dir(),
                                reason="node peers not installed")


def npm_peer(req):
    proc = subprocess.run([NODE, str(PEERS / "httpsig_peer.js")], input=json.dumps(req).encode(), capture_output=True,
                          timeout=60, cwd=PEERS, env={**os.environ, "NODE_NO_WARNINGS": "1"})
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


@needs_node
def test_npm_peer_verifies_aocu_response_signatures():
    from cu.codec.wallet import Ed25519Key

    key = Ed25519Key.from_seed(b"\x09" * 32)
    req = HTTPMessage(method="GET", url="https://node.example/result/abc?process-id=p", headers=[("Host", "node.example")])
    body = b'{"Output":"x"}'
    res = HTTPMessage(status=200, body=body, request=req,
                      headers=[("Content-Type", "application/json"), ("Content-Digest", content_digest(body)),
                               ("Process", "p" * 43)])
    sign_message(res, label="aocu", key=key._key, alg="ed25519", keyid="node-ed25519", include_alg=True,
                 components=["@status", "content-digest", "process", '"@method";req', '"@path";req',
                             '"@query-param";name="process-id";req'])
    keys = {"node-ed25519": {"alg": "ed25519", "jwk": key.to_jwk()}}
    wire = {"method": "GET", "url": req.url, "headers": dict(req.headers)}
    assert npm_peer({"op": "verify", "message": {"status": 200, "headers": dict(res.headers)}, "request": wire,
                     "keys": keys})["result"] is True
    tampered = dict(res.headers, Process="q" * 43)
    assert npm_peer({"op": "verify", "message": {"status": 200, "headers": tampered}, "request": wire,
                     "keys": keys})["result"] is False


@needs_node
def test_aocu_verifies_npm_peer_signatures():
    from cu.codec.wallet import Ed25519Key

    key = Ed25519Key.from_seed(b"\x0a" * 32)
    out = npm_peer({"op": "sign", "alg": "ed25519", "jwk": key.to_jwk(), "keyid": "k1", "name": "theirs",
                    "message": {"method": "POST", "url": "https://x.example/a/b?c=d&e=f",
                                "headers": {"content-type": "text/plain", "date": "Tue, 20 Apr 2021 02:07:55 GMT"}},
                    "fields": ["@method", "@authority", "@path", "@query", "@target-uri", "content-type", "date"],
                    "params": ["created", "keyid", "alg"], "paramValues": {"created": 1618884473}})
    msg = HTTPMessage(method="POST", url="https://x.example/a/b?c=d&e=f", headers=list(out["headers"].items()))
    (res,) = verify_message(msg, lambda keyid, alg: ("ed25519", key._key.public_key()))
    assert res.valid and res.label == "theirs" and res.params["created"] == 1618884473


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.sampled_from(["@authority", "@path", "@query", "@scheme", "@target-uri",
                                              "@request-target", '"@query-param";name="a"']))
def test_fuzz_derived_components_on_odd_urls(url, comp):
    msg = HTTPMessage(method="GET", url=url, headers=[("Date", "x")])
    try:
        sign_message(msg, label="f", key=SHARED_SECRET, alg="hmac-sha256", keyid="k", components=[comp])
    except CodecError:
        pass
