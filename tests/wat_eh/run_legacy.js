// Runs a legacy-EH module natively in V8 (node 20 still implements the legacy opcodes): the oracle for the
// original semantics. Usage: node run_legacy.js module.wasm [--only=name,name] x1 x2 ...
// Prints JSON {export: [[results..., trace], ...]}: every exported function (or only the named ones) is
// called with each x on a fresh instance (after `_initialize` if exported); results are decimal strings
// (multi-value flattened), "uncaught" if a wasm exception escaped; trace is the exported global `trace`
// after the call ("" if none). Imported functions trap if called.
const fs = require('fs');
const mod = new WebAssembly.Module(fs.readFileSync(process.argv[2]));
let args = process.argv.slice(3);
let only = null;
if (args.length && args[0].startsWith('--only=')) {
  only = args[0].slice(7).split(',');
  args = args.slice(1);
}
const imports = {};
for (const imp of WebAssembly.Module.imports(mod)) {
  if (imp.kind !== 'function') throw new Error(`unsupported import ${imp.module}.${imp.name}`);
  imports[imp.module] = imports[imp.module] || {};
  imports[imp.module][imp.name] = () => { throw new Error(`import ${imp.module}.${imp.name} called`); };
}
const out = {};
for (const e of WebAssembly.Module.exports(mod)) {
  if (e.kind !== 'function' || (only && !only.includes(e.name))) continue;
  out[e.name] = args.map((x) => {
    const inst = new WebAssembly.Instance(mod, imports);
    if (inst.exports._initialize) inst.exports._initialize();
    let r;
    try {
      const v = inst.exports[e.name](Number(x) | 0);
      r = v === undefined ? [] : Array.isArray(v) ? v.map(String) : [String(v)];
    } catch (err) {
      if (!(err instanceof WebAssembly.Exception)) throw err;
      r = ['uncaught'];
    }
    const t = inst.exports.trace;
    r.push(t ? String(t.value) : '');
    return r;
  });
}
console.log(JSON.stringify(out));
