// The legacy CU's own computations, run with the real peers (tests/peers/node_modules):
//  - dedup deep hash: arbundles createData(data, {publicKey: '', ownerLength: 0, signatureLength: 512,
//    signatureType: 1}, {tags, target, anchor}).getSignatureData() as base64 (hydrateMessages.js maybeMessageId)
//  - checkpoint data: zlib.gzipSync(memory, {level: 9}) (ao-process.js), and gunzip + SHA-256 of ours
// stdin: {"messages": [{data, tags, target, anchor}], "memory_b64": "...", "ours_b64": "..."}
// stdout: {"hashes": [...], "gz": b64, "ours_sha256": hex}
const path = require('path');
const zlib = require('zlib');
const { createData } = require(path.join(__dirname, '..', 'peers', 'node_modules', 'arbundles'));

let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', async () => {
  const req = JSON.parse(input);
  const signer = { publicKey: Buffer.from(''), ownerLength: 0, signatureLength: 512, signatureType: 1 };
  const hashes = [];
  for (const m of req.messages) {
    const item = createData(m.data == null ? '' : m.data, signer, { tags: m.tags, target: m.target, anchor: m.anchor });
    hashes.push(Buffer.from(await item.getSignatureData()).toString('base64'));
  }
  const gz = zlib.gzipSync(Buffer.from(req.memory_b64 || '', 'base64'), { level: 9 }).toString('base64');
  const crypto = require('crypto');
  const ours = zlib.gunzipSync(Buffer.from(req.ours_b64 || '', 'base64'));
  const oursSha = crypto.createHash('sha256').update(ours).digest('hex');
  process.stdout.write(JSON.stringify({ hashes, gz, ours_sha256: oursSha }));
});
