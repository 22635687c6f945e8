"""The local evaluator, as composed parts (each usable alone; the bridge shares the lower ones):

- `state`: `ProcState` (a warm local process) and `WarmInstance` (what evaluating on a warm instance needs)
- `modules`: the engine, loaded modules (`ModuleCache`), a process's instance limits and env
- `runner`: evaluating one message on a warm instance (`Runner`), its result row, `dry_run_on`
- `recent`: `RecentMessages`, freshly scheduled messages kept in memory until evaluated
- `outbox`: `OutboxSigner`, the legacy MU's signing of outbox Messages/Spawns/Assignments
- `patches`: `PatchCache`, the patch@1.0 state of each process (AO-Core `/now`), saved next to checkpoints
- `checkpoints`: `Checkpoints`, engine snapshots of warm processes in the store (full, or incremental chains)
- `memimage`: memory images as page maps and the XOR page deltas of incremental checkpoints
- `images`: `InitImages`, each module's state right after instantiation, new processes start from it
- `exports`: `StateExports`, `/state` of processes too large for one RPC frame, spooled and read in chunks
- `locks`: `KeyedLocks`, one lock per process
- `warm`: `WarmSet` (the warm-instance LRU) and `ProcessLoader`
- `failed`: `FailedProcesses`, processes whose instance cannot be built (refused until the record is removed)
- `loop`: `Evaluator`, the composition: the evaluation loop, crank and reads

Layering: this package imports cu.engine, cu.codec and the node's store/legacy/cron/limits/items/config/errors
only; never cu.http, cu.node.{service,dispatch,core} or the bridge (which imports modules, runner and locks
from here)."""
