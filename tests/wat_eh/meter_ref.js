// Reference metering: @permaweb/wasm-metering (the implementation the AO loader bundles).
// Usage: node meter_ref.js in.wasm out.wasm i32|i64  (errors -> exit code 2 with the message on stderr)
const path = require('path');
const fs = require('fs');
const peers = path.join(__dirname, '..', 'peers', 'node_modules');
const metering = require(path.join(peers, '@permaweb', 'wasm-metering'));
try {
  const out = metering.meterWASM(fs.readFileSync(process.argv[2]), { meterType: process.argv[4] });
  fs.writeFileSync(process.argv[3], out);
} catch (e) {
  process.stderr.write(String(e && e.message || e) + '\n');
  process.exit(2);
}
