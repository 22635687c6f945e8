// Drives an aocu node with the unchanged @permaweb/aoconnect 0.0.98 legacy client.
// Usage: node aoconnect_e2e.js URL WALLET.json MODULE.wasm MODULE_FORMAT SCHEDULER_ADDRESS
// Uploads the module as a Type=Module data item (arbundles, same signer), then spawn / message /
// result / results / dryrun through aoconnect; prints one JSON object with everything observed.
const { readFileSync } = require('node:fs')
const { connect, createDataItemSigner } = require('@permaweb/aoconnect')
const { ArweaveSigner, createData } = require('arbundles')

async function main () {
  const [url, walletPath, wasmPath, moduleFormat, scheduler] = process.argv.slice(2)
  const jwk = JSON.parse(readFileSync(walletPath, 'utf8'))
  const wasm = readFileSync(wasmPath)

  const moduleItem = createData(wasm, new ArweaveSigner(jwk), {
    tags: [
      { name: 'Data-Protocol', value: 'ao' },
      { name: 'Variant', value: 'ao.TN.1' },
      { name: 'Type', value: 'Module' },
      { name: 'Module-Format', value: moduleFormat },
      { name: 'Input-Encoding', value: 'JSON-1' },
      { name: 'Output-Encoding', value: 'JSON-1' },
      { name: 'Memory-Limit', value: '512-mb' },
      { name: 'Compute-Limit', value: '9000000000000' },
      { name: 'Content-Type', value: 'application/wasm' }
    ]
  })
  await moduleItem.sign(new ArweaveSigner(jwk))
  const up = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/octet-stream', Accept: 'application/json' },
    body: moduleItem.getRaw()
  })
  if (!up.ok) throw new Error(`module upload: ${up.status} ${await up.text()}`)
  const moduleId = moduleItem.id

  const { spawn, message, result, results, dryrun } = connect({
    MODE: 'legacy', MU_URL: url, CU_URL: url, GATEWAY_URL: url, noLog: true
  })
  const signer = createDataItemSigner(jwk)

  const out = { moduleId, upload: await up.json() }
  out.processId = await spawn({
    module: moduleId,
    scheduler,
    signer,
    tags: [{ name: 'Name', value: 'aoconnect-e2e' }]
  })

  const send = async (action, data, extra = []) => message({
    process: out.processId,
    signer,
    tags: [{ name: 'Action', value: action }, ...extra],
    data
  })

  out.messages = []
  for (const [action, data] of [['Eval', '1 + 1'], ['Count', ''], ['Count', ''], ['Echo', 'héllo'],
    ['Fail', 'on purpose'], ['Count', '']]) {
    const id = await send(action, data)
    out.messages.push({ action, id, result: await result({ process: out.processId, message: id }) })
  }
  out.results = await results({ process: out.processId, sort: 'ASC', limit: 25 })
  out.resultsDesc = await results({ process: out.processId, sort: 'DESC', limit: 2 })
  out.dryrun = await dryrun({ process: out.processId, tags: [{ name: 'Action', value: 'Info' }], data: '' })
  out.dryrunEval = await dryrun({ process: out.processId, tags: [{ name: 'Action', value: 'Eval' }], data: 'Count' })
  // a mutating handler in a dry-run: its effect must be discarded
  out.dryrunCount = await dryrun({ process: out.processId, tags: [{ name: 'Action', value: 'Count' }] })
  // the dry-run must not have changed the state: the next Count continues from the last real one
  const after = await send('Count', '')
  out.afterDryrun = await result({ process: out.processId, message: after })
  process.stdout.write(JSON.stringify(out))
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + '\n')
  process.exit(1)
})
