// arbundles peer for the codec interop tests and bench/codecs.py.
// Reads one JSON request on stdin, writes one JSON reply on stdout. Binary values are base64.
//   {"op":"create", "type":1|2|3|4, "key":<JWK | hex | base58 secret>, "items":[{data,tags,target,anchor}]}
//   {"op":"verify", "items":[b64...]}            -> per item: valid + decoded fields
//   {"op":"bundle", "items":[b64...]}            -> bundle body built by bundleAndSignData (items pre-signed)
//   {"op":"unbundle", "bundle":b64}              -> Bundle.verify() and the items
//   {"op":"bench", "items":[b64...], "seconds":s} -> parse+verify throughput (items/s)
"use strict";
const ab = require("arbundles");
const bs58 = require("bs58");

function signerFor(type, key) {
  if (type === 1) return new ab.ArweaveSigner(key);
  if (type === 2) return new ab.SolanaSigner(key); // Curve25519 with signatureType 2
  if (type === 3) return new ab.EthereumSigner(key);
  if (type === 4) return new ab.HexSolanaSigner(key);
  throw new Error("unsupported type " + type);
}

function describe(item, valid) {
  return {
    valid,
    id: item.id,
    signatureType: item.signatureType,
    owner: item.owner,
    target: item.target,
    anchor: Buffer.from(item.rawAnchor).toString("base64"),
    tags: item.tags.map((t) => [Buffer.from(t.name).toString("base64"), Buffer.from(t.value).toString("base64")]),
    data: Buffer.from(item.rawData).toString("base64"),
    // ethers' EIP-55 address for Ethereum owners (what the legacy CU shows as Owner)
    ethAddress: item.signatureType === 3 ? require("@ethersproject/transactions").computeAddress(item.rawOwner) : null,
  };
}

async function main() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const req = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const out = {};
  if (req.op === "create") {
    const signer = signerFor(req.type, req.key);
    out.items = [];
    for (const spec of req.items) {
      const opts = {};
      if (spec.tags) opts.tags = spec.tags.map(([name, value]) => ({ name, value }));
      if (spec.target) opts.target = spec.target;
      if (spec.anchor) opts.anchor = spec.anchor;
      const item = ab.createData(Buffer.from(spec.data || "", "base64"), signer, opts);
      await item.sign(signer);
      out.items.push({ raw: Buffer.from(item.getRaw()).toString("base64"), ...describe(item, await item.isValid()) });
    }
  } else if (req.op === "verify") {
    out.items = [];
    for (const b64 of req.items) {
      const raw = Buffer.from(b64, "base64");
      let valid = false;
      try {
        valid = await ab.DataItem.verify(raw);
      } catch (e) {
        out.items.push({ valid: false, error: String(e) });
        continue;
      }
      out.items.push(describe(new ab.DataItem(raw), valid));
    }
  } else if (req.op === "bundle") {
    const items = req.items.map((b) => new ab.DataItem(Buffer.from(b, "base64")));
    for (const it of items) it.rawId = it.rawId; // mark as signed so bundleAndSignData keeps signatures
    const dummy = { signatureType: 2, ownerLength: 32, signatureLength: 64, publicKey: Buffer.alloc(32), sign: () => { throw new Error("unsigned item"); } };
    const bundle = await ab.bundleAndSignData(items, dummy);
    out.bundle = Buffer.from(bundle.getRaw()).toString("base64");
  } else if (req.op === "unbundle") {
    const bundle = ab.unbundleData(Buffer.from(req.bundle, "base64"));
    out.valid = await bundle.verify();
    out.ids = bundle.getIds();
    out.items = bundle.items.map((it) => Buffer.from(it.getRaw()).toString("base64"));
  } else if (req.op === "bench") {
    const raws = req.items.map((b) => Buffer.from(b, "base64"));
    const deadline = Date.now() + 1000 * (req.seconds || 2);
    let n = 0;
    const t0 = process.hrtime.bigint();
    while (Date.now() < deadline) {
      for (const raw of raws) {
        const item = new ab.DataItem(raw);
        if (!(await ab.DataItem.verify(raw))) throw new Error("bench item failed to verify");
        void item.id; void item.tags; void item.rawData;
        n++;
      }
    }
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    out.items_per_s = n / secs;
    out.count = n;
  } else if (req.op === "keygen") {
    // Keys in the forms arbundles' signers take (for items arbundles creates itself).
    const crypto = require("crypto");
    const { privateKey } = crypto.generateKeyPairSync("ed25519");
    const jwk = privateKey.export({ format: "jwk" });
    const seed = Buffer.from(jwk.d, "base64url");
    const pub = Buffer.from(jwk.x, "base64url");
    out.solana = bs58.encode(Buffer.concat([seed, pub]));
    out.eth = crypto.randomBytes(32).toString("hex");
  } else {
    throw new Error("unknown op " + req.op);
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + "\n");
  process.exit(1);
});
