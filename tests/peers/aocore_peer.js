// ao-core-libs (the HyperBEAM client under @permaweb/aoconnect) as an httpsig@1.0 peer.
// stdin: {"jwk": {...}, "requests": [{"path": "/x", "method": "POST", "fields": {...}}]}
// Field values: strings, numbers, arrays, nested objects; {"$bytes": "<base64>"} becomes a Uint8Array.
// stdout: {"requests": [{"method", "url", "headers": [[name, value]...], "body": base64}]}
// fetch is replaced by a recorder, so nothing leaves the process.
"use strict";
const lib = require("@permaweb/ao-core-libs");

function revive(v) {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    if (typeof v.$bytes === "string") return new Uint8Array(Buffer.from(v.$bytes, "base64"));
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = revive(x);
    return o;
  }
  if (Array.isArray(v)) return v.map(revive);
  return v;
}

async function main() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const req = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const captured = [];
  globalThis.fetch = async (url, init) => {
    const headers = [];
    new Headers(init.headers).forEach((v, k) => headers.push([k, v]));
    let body = Buffer.alloc(0);
    if (init.body !== undefined && init.body !== null) {
      body = Buffer.from(await new Response(init.body).arrayBuffer());
    }
    captured.push({ method: init.method, url: String(url), headers, body: body.toString("base64") });
    return new Response("ok", { status: 200 });
  };
  const init = (lib.default && lib.default.init) || lib.init;
  const client = init({ jwk: req.jwk, url: "http://peer.invalid" });
  for (const r of req.requests) {
    await client.request({ path: r.path || "/~meta@1.0/info", method: r.method || "POST", ...revive(r.fields) });
  }
  process.stdout.write(JSON.stringify({ requests: captured }));
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + "\n");
  process.exit(1);
});
