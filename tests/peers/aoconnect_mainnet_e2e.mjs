// Drives an aocu node with the unchanged @permaweb/aoconnect 0.0.98 in MODE "mainnet" (ao-core-libs underneath).
// Usage: node aoconnect_mainnet_e2e.mjs URL WALLET.json MODULE.wasm MODULE_FORMAT
// Uploads the module as a Type=Module data item (arbundles; mainnet mode has no module upload), then spawn /
// message / result / results / dryrun and an httpsig-signed request() push through aoconnect. fetch is wrapped
// only to record every exchange (method, url, status, headers, body), so the test can verify each signed reply;
// the requests themselves are the client's. Prints one JSON object with everything observed.
// ES module: aoconnect's CommonJS build cannot load ao-core-libs' default export in mainnet mode.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { connect, createSigner } from '@permaweb/aoconnect'
const { ArweaveSigner, createData } = createRequire(import.meta.url)('arbundles')

const exchanges = []
const realFetch = globalThis.fetch
globalThis.fetch = async (url, init = {}) => {
  const res = await realFetch(url, init)
  const body = Buffer.from(await res.clone().arrayBuffer())
  const headers = []
  res.headers.forEach((v, k) => headers.push([k, v]))
  exchanges.push({ method: init.method || 'GET', url: String(url), status: res.status, headers, body: body.toString('base64') })
  return res
}

const out = {}

async function main () {
  const [url, walletPath, wasmPath, moduleFormat] = process.argv.slice(2)
  const jwk = JSON.parse(readFileSync(walletPath, 'utf8'))
  const moduleItem = createData(readFileSync(wasmPath), new ArweaveSigner(jwk), {
    tags: [
      { name: 'Data-Protocol', value: 'ao' }, { name: 'Variant', value: 'ao.TN.1' },
      { name: 'Type', value: 'Module' }, { name: 'Module-Format', value: moduleFormat },
      { name: 'Input-Encoding', value: 'JSON-1' }, { name: 'Output-Encoding', value: 'JSON-1' },
      { name: 'Memory-Limit', value: '512-mb' }, { name: 'Compute-Limit', value: '9000000000000' },
      { name: 'Content-Type', value: 'application/wasm' }
    ]
  })
  await moduleItem.sign(new ArweaveSigner(jwk))
  const up = await realFetch(url, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: moduleItem.getRaw() })
  if (!up.ok) throw new Error(`module upload: ${up.status} ${await up.text()}`)

  const ao = connect({ MODE: 'mainnet', URL: url, signer: createSigner(jwk) })
  out.moduleId = moduleItem.id
  out.processId = await ao.spawn({ module: moduleItem.id, tags: [{ name: 'Name', value: 'mainnet-e2e' }], data: '' })

  out.messages = []
  for (const [action, data] of [['Eval', '1 + 1'], ['Count', ''], ['Count', ''], ['Echo', 'héllo'], ['Fail', 'on purpose']]) {
    const slot = await ao.message({ process: out.processId, tags: [{ name: 'Action', value: action }], data })
    out.messages.push({ action, slot, result: await ao.result({ process: out.processId, slot }) })
  }
  // by message id, as aoconnect's returnMessageId + result({message}) do
  const sent = await ao.message({ process: out.processId, tags: [{ name: 'Action', value: 'Count' }], data: '', returnMessageId: true, returnAssignmentSlot: true })
  out.byId = { sent, result: await ao.result({ process: out.processId, message: sent.id }) }
  out.results = await ao.results({ process: out.processId })
  out.dryrun = await ao.dryrun({ process: out.processId, tags: [{ name: 'Action', value: 'Info' }], data: '' })
  out.dryrunEval = await ao.dryrun({ process: out.processId, tags: [{ name: 'Action', value: 'Eval' }], data: 'Count' })
  out.dryrunCount = await ao.dryrun({ process: out.processId, tags: [{ name: 'Action', value: 'Count' }] })
  const after = await ao.message({ process: out.processId, tags: [{ name: 'Action', value: 'Count' }], data: '' })
  out.afterDryrun = await ao.result({ process: out.processId, slot: after })
  // an httpsig-signed push through request() (signing-format: httpsig)
  const res = await ao.request({
    path: `/${out.processId}~process@1.0/push`,
    method: 'POST',
    'signing-format': 'httpsig',
    target: out.processId,
    Action: 'Echo',
    data: 'via httpsig',
    Type: 'Message',
    'Data-Protocol': 'ao',
    Variant: 'ao.N.1',
    'require-codec': 'application/json'
  })
  out.httpsigPush = { status: res.status, body: await res.json() }
  out.httpsigResult = await ao.result({ process: out.processId, slot: out.httpsigPush.body.slot })
  out.exchanges = exchanges
  process.stdout.write(JSON.stringify(out))
}

main().catch((err) => {
  // what was observed up to the failure, for the test's error message
  out.exchanges = exchanges
  out.error = String(err && err.stack ? err.stack : err)
  process.stdout.write(JSON.stringify(out))
  process.exit(1)
})
