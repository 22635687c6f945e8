// RFC 9421 peer: the `http-message-signatures` npm package (the one ao-core-libs signs with).
// stdin: {"op": "verify", "message": {...}, "request": {...}?, "keys": {keyid: {"alg", "jwk"|"secret"}}}
//        {"op": "sign", "message": {...}, "alg", "jwk"|"secret", "keyid", "name", "fields": [...], "params": [...], "paramValues": {...}}
// message: {"method", "url", "headers": {name: value}} or {"status", "headers"}.
// A keyid that is not in `keys` and decodes (base64, optional "publickey:") to an RSA modulus is used as
// the RSA public key, the way HyperBEAM reads its keyids.
"use strict";
const crypto = require("crypto");
const hms = require("http-message-signatures");

function keyFrom(spec, pub) {
  if (spec.secret !== undefined) return Buffer.from(spec.secret, "base64");
  const k = crypto.createPrivateKey !== undefined && !pub && spec.jwk.d
    ? crypto.createPrivateKey({ key: spec.jwk, format: "jwk" })
    : crypto.createPublicKey({ key: { ...spec.jwk, d: undefined, p: undefined, q: undefined, dp: undefined, dq: undefined, qi: undefined }, format: "jwk" });
  return k;
}

async function main() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const req = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  let out;
  if (req.op === "verify") {
    const keyLookup = async (params) => {
      let spec = req.keys[params.keyid];
      if (!spec && params.alg === "rsa-pss-sha512" && typeof params.keyid === "string") {
        const n = Buffer.from(params.keyid.replace(/^publickey:/, ""), "base64");
        spec = { alg: "rsa-pss-sha512", jwk: { kty: "RSA", e: "AQAB", n: n.toString("base64url") } };
      }
      if (!spec) return null;
      const v = hms.createVerifier(keyFrom(spec, true), spec.alg);
      return { verify: v, algs: [spec.alg] };
    };
    try {
      const result = req.request
        ? await hms.httpbis.verifyMessage({ keyLookup, notAfter: 4102444800 }, req.message, req.request)
        : await hms.httpbis.verifyMessage({ keyLookup, notAfter: 4102444800 }, req.message);
      out = { result };
    } catch (e) {
      out = { result: false, error: String(e) };
    }
  } else if (req.op === "sign") {
    const signer = hms.createSigner(keyFrom(req, false), req.alg, req.keyid);
    const paramValues = { ...(req.paramValues || {}) };
    for (const k of ["created", "expires"]) if (typeof paramValues[k] === "number") paramValues[k] = new Date(paramValues[k] * 1000);
    const signed = await hms.httpbis.signMessage(
      { key: signer, name: req.name, fields: req.fields, params: req.params, paramValues },
      req.message,
    );
    out = { headers: signed.headers };
  } else {
    throw new Error("unknown op " + req.op);
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + "\n");
  process.exit(1);
});
