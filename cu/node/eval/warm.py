"""Warm local processes: the warm-instance LRU with one lock per process (`WarmSet`), and loading a process's
warm state from the store (`ProcessLoader`: from its latest checkpoint, or from the start, a new process from its
module's init image when there is one).

With `background=True` (the node's `lifecycle = "fast"`) an evicted process leaves the request path at once: it
is moved to a retiring set that one thread checkpoints and then drops, under the process's lock; a request for
it meanwhile takes it back warm. A kill at any point loses nothing: checkpoints are only a shortcut over the
log, and each is written in one transaction."""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from cu.node import cron
from cu.node.errors import NotFound
from cu.node.eval.checkpoints import Checkpoints
from cu.node.eval.failed import FailedProcesses
from cu.node.eval.images import InitImages
from cu.node.eval.locks import KeyedLocks
from cu.node.eval.modules import ModuleCache, engine, instance_limits, process_env
from cu.node.eval.patches import PatchCache
from cu.node.eval.state import ProcState

if TYPE_CHECKING:
    from cu.node.config import NodeConfig
    from cu.node.store_sqlite import SqliteStore


log = logging.getLogger("aocu.evaluator")


class WarmSet:
    """The warm processes, least recently used first. Once idle they are kept within `max_warm` instances
    (permaweb/ao#837) and within `max_memory` bytes of linear memory together (0: no byte budget; the node's
    `--max-memory`): `load(pid)` builds a missing one, `retire(pid)` (called holding the process's lock)
    checkpoints one about to be dropped, `on_evicted(state)` hears of each dropped state. The most recently used
    process is never evicted (a caller is using it), so one process larger than the whole budget still runs,
    alone. `metrics` gets `warm_bytes` and `evictions_count` / `evictions_memory` (why processes were
    checkpointed out). `background`: evicted processes are checkpointed by a thread of their own (module doc)."""

    def __init__(self, max_warm: int, load: Callable[[str], ProcState], retire: Callable[[str], None],
                 max_memory: int = 0, metrics: dict[str, float] | None = None, *, background: bool = False,
                 on_evicted: Callable[[ProcState], None] | None = None) -> None:
        self.max_warm = max_warm
        self.max_memory = max_memory
        self.lock = KeyedLocks()
        self._load = load
        self._retire = retire
        self._on_evicted = on_evicted or (lambda st: None)
        self._guard = threading.Lock()
        self._procs: OrderedDict[str, ProcState] = OrderedDict()
        self.background = background
        self._retiring: dict[str, ProcState] = {}
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.metrics = metrics if metrics is not None else {}
        for k in ("warm_bytes", "evictions_count", "evictions_memory", "retire_failures"):
            self.metrics.setdefault(k, 0)
        self.metrics["memory_budget"] = max_memory

    def __len__(self) -> int:
        return len(self._procs)

    def __getitem__(self, pid: str) -> ProcState:
        return self._procs[pid]

    def get(self, pid: str) -> ProcState | None:
        """The warm state of `pid` if there is one, retiring or not (its recency unchanged)."""
        with self._guard:
            st = self._procs.get(pid)
            return st if st is not None else self._retiring.get(pid)

    def items(self) -> list[tuple[str, ProcState]]:
        """The warm states (not those being retired: `drain()` waits for them)."""
        with self._guard:
            return list(self._procs.items())

    def bytes(self) -> int:
        """Linear memory of the warm instances together (as of their last evaluation)."""
        with self._guard:
            return sum(st.mem_bytes for st in self._procs.values())

    def state(self, pid: str) -> ProcState:
        """The warm state of `pid`, loaded when it is not warm (call with the process's lock held)."""
        with self._guard:
            st = self._procs.get(pid)
            if st is None:
                st = self._retiring.pop(pid, None)      # retiring, not yet checkpointed: warm again
                if st is not None:
                    st.evicting = False
                    self._procs[pid] = st
            if st is not None:
                self._procs.move_to_end(pid)
                return st
        st = self._load(pid)
        with self._guard:
            self._procs[pid] = st
        self.evict()
        return st

    def drop(self, pid: str) -> None:
        """Forgets the warm state of `pid` (it no longer matches the store: rebuilt from a checkpoint next)."""
        with self._guard:
            self._procs.pop(pid, None)
            self._retiring.pop(pid, None)
        self.metrics["warm_bytes"] = self.bytes()

    def _over(self, count: int, total: int) -> str | None:
        if count > self.max_warm:
            return "count"
        if self.max_memory and total > self.max_memory:
            return "memory"
        return None

    def trim(self) -> None:
        """After evaluations (memory may have grown): evicts what the limits no longer allow."""
        total = self.bytes()
        self.metrics["warm_bytes"] = total
        if self._over(len(self._procs), total):
            self.evict()      # also retries instances that were busy at load time

    def evict(self) -> None:
        """Checkpoints and drops the least recently used idle processes while there are more than `max_warm`
        or they hold more than `max_memory` bytes; never the most recently used one. In the background mode
        they are handed to the retiring thread instead (unless it is more than `max_warm` behind)."""
        with self._guard:
            order = list(self._procs.items())
        count, total = len(order), sum(st.mem_bytes for _, st in order)
        for pid, _ in order[:-1]:
            reason = self._over(count, total)
            if reason is None:
                break
            lock = self.lock(pid)
            if not lock.acquire(blocking=False):
                continue
            try:
                st = self._procs.get(pid)
                if st is None:
                    continue
                if self.background and st.since_checkpoint and len(self._retiring) < self.max_warm:
                    with self._guard:
                        self._procs.pop(pid, None)
                        self._retiring[pid] = st
                        st.evicting = True
                    self._queue.put(pid)
                    self._start()
                else:
                    st.evicting = True
                    if st.since_checkpoint:
                        self._retire(pid)
                    with self._guard:
                        self._procs.pop(pid, None)
                    self._on_evicted(st)
                count, total = count - 1, total - st.mem_bytes
                self.metrics[f"evictions_{reason}"] += 1
            finally:
                lock.release()
        self.metrics["warm_bytes"] = self.bytes()

    def _start(self) -> None:
        with self._guard:
            if self._thread is None:
                self._thread = threading.Thread(target=self._retiring_loop, name="aocu-retire", daemon=True)
                self._thread.start()

    def _retiring_loop(self) -> None:
        while True:
            pid = self._queue.get()
            try:
                with self.lock(pid):
                    st = self._retiring.get(pid)
                    if st is None:
                        continue          # taken back warm (or dropped) meanwhile
                    try:
                        if st.since_checkpoint:
                            self._retire(pid)
                        self._on_evicted(st)
                    except Exception as exc:  # noqa: BLE001 - the log still has every message: replayed later
                        self.metrics["retire_failures"] += 1
                        log.error("checkpoint of evicted %s failed: %s", pid, exc)
                    with self._guard:
                        if self._retiring.get(pid) is st:
                            del self._retiring[pid]
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Returns once every process handed to the retiring thread so far is checkpointed and dropped."""
        self._queue.join()


class ProcessLoader:
    """The warm state of a local process, from the store: its module loaded, limits and env, its instance restored
    from the latest checkpoint (with the patch cache saved next to it) or fresh. Instantiation runs under the
    evaluation wall-clock limit (`timeout_s` of the limits: the engine bounds the start function, constructors and
    `main` by it); a process whose instance cannot be built is marked in `failed` and refused from then on."""

    def __init__(self, config: NodeConfig, store: SqliteStore, modules: ModuleCache, checkpoints: Checkpoints,
                 patches: PatchCache, failed: FailedProcesses | None = None,
                 images: InitImages | None = None) -> None:
        self.config = config
        self.images = images
        self.store = store
        self.modules = modules
        self.checkpoints = checkpoints
        self.patches = patches
        self.failed = failed if failed is not None else FailedProcesses(None)

    def load(self, pid: str) -> ProcState:
        eng = engine()
        proc = self.store.process(pid)
        if proc is None:
            raise NotFound(f"Process {pid} not found")
        self.failed.check(pid, self.config.eval_timeout_s)
        module_meta = self.store.item_meta(proc.module)
        if module_meta is None:
            raise NotFound(f"Module {proc.module} not found")
        fmt, limits = instance_limits(pid, proc.tags, module_meta.tags, memory_max=self.config.memory_max,
                                      compute_max=self.config.compute_max, timeout_s=self.config.eval_timeout_s)
        module = self.modules.get(proc.module, fmt)
        env = process_env(pid=pid, process_owner=proc.owner, process_tags=proc.tags, module_id=proc.module,
                          module_owner=module_meta.owner, module_tags=module_meta.tags)
        st = ProcState(pid=pid, module_id=proc.module, module=module, instance=None, env=env,
                       crons=cron.parse_crons(proc.tags), owner=proc.owner, process_ts=proc.timestamp,
                       process_height=proc.block_height, limits=limits, last_height=proc.block_height)
        self.checkpoints.restore(st)
        if st.instance is None:
            try:
                st.instance = (self.images.instance(module, limits) if self.images is not None
                               else eng.Instance(module, **limits))
            except eng.EngineError as exc:
                raise self.failed.mark(pid, proc.module, str(exc), limits.get("timeout_s")) from None
            self.patches.reset(pid)     # every message is evaluated again from the start
        last = self.store.last_result(pid)
        st.stored_seq = last.seq if last is not None else -1
        st.mem_bytes = st.instance.memory_size
        return st
