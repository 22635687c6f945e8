"""Outbox delivery to other units (the MU's push role), docs/EXCHANGE.md.

A result's outbox entries whose target is not scheduled on this node are committed with the result as
`pending` (cu/node/store_sqlite.py); the `Deliverer` (deliverer.py) of the evaluator process locates each
target's scheduler (locate.py: this node, the `--peer` AO-Core/aocu nodes, the gateway's Scheduler-Location)
and pushes the stored message to it (push.py, over net.py), retrying on the schedule of policy.py until the
remote answers. `BridgedOutbox` (bridged.py) records the outbox of bridged legacynet processes for targets on
this node (`--deliver-bridged`).

Layering: imports cu.codec, the node's store/items/signed_http/errors and the bridge's gateway client; the
evaluator core starts the deliverer, nothing here imports the core, the dispatcher or cu.node.eval's loop."""
