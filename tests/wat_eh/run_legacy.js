// Runs a legacy-EH module natively in V8 (node), which still implements the legacy opcodes: the oracle
// for the original semantics. Usage: node run_legacy.js module.wasm x1 x2 ...  -> JSON [[result, trace], ...]
// result is the i64 returned by run(x) as a decimal string, or "uncaught" if an exception escaped.
const fs = require('fs');
const bytes = fs.readFileSync(process.argv[2]);
const mod = new WebAssembly.Module(bytes);
const out = [];
for (const x of process.argv.slice(3)) {
  const inst = new WebAssembly.Instance(mod, {});
  let r;
  try {
    r = inst.exports.run(Number(x) | 0).toString();
  } catch (e) {
    if (!(e instanceof WebAssembly.Exception)) throw e;
    r = 'uncaught';
  }
  out.push([r, inst.exports.trace.value.toString()]);
}
console.log(JSON.stringify(out));
