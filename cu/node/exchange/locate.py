"""Where a target is scheduled (docs/EXCHANGE.md, Locate), in this order:

1. this node (the process may have been spawned here after the result was committed);
2. each `--peer` (AO-Core / aocu node): `GET {peer}/{pid}/slot/current` answers 200 on the node that schedules
   `pid` (HyperBEAM answers this route too); for a Spawn, the peer whose `GET /~meta@1.0/info/address` is the
   spawn's `Scheduler`;
3. with `--gateway`: the process's transaction on the gateway names its `Scheduler`, whose latest
   `Scheduler-Location` record gives the legacy SU's URL (`--su-url` overrides it, for every process).

Answers are cached (peers: for good; Scheduler-Location: 10 minutes). `NotLocated.unsure` says that some place
could not be asked (a peer or the gateway did not answer): the target may be there, so the entry is retried like
a network error rather than counted as "found nowhere"."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cu.node.bridge.errors import BridgeError, BridgeNotFound, UpstreamAnswerError, UpstreamError
from cu.node.bridge.gateway import GatewayClient
from cu.node.bridge.net import check_base_url, q
from cu.node.exchange import net

CACHE_SIZE = 10_000
SU_TTL_S = 600.0
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Location:
    kind: str          # local | peer | su
    url: str = ""      # the peer's or the SU's base URL

    def describe(self) -> str:
        return "this node" if self.kind == "local" else f"{self.kind} {self.url}"


def _gateway_failed(exc: BridgeError, looked: list[str]) -> bool:
    """Records why the gateway gave no location; True when it was unreachable (it may answer later), False
    when it answered unusably or said no."""
    looked.append(f"gateway: {exc.message}")
    return isinstance(exc, UpstreamError) and not isinstance(exc, UpstreamAnswerError)


class NotLocated(Exception):
    def __init__(self, reason: str, *, unsure: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsure = unsure


class Locator:
    def __init__(self, *, peers: list[str], gateway: GatewayClient | None, su_url: str | None, own_address: str,
                 is_local: Callable[[str], bool]) -> None:
        self.peers = list(peers)
        self.gateway = gateway
        self.su_url = su_url
        self.own_address = own_address
        self.is_local = is_local
        self._lock = threading.Lock()
        self._where: OrderedDict[str, tuple[Location, float]] = OrderedDict()   # pid or address -> (where, until)
        self._peer_address: dict[str, str] = {}                                 # peer URL -> its address

    # cache ------------------------------------------------------------------------------------------------
    def _cached(self, key: str) -> Location | None:
        with self._lock:
            got = self._where.get(key)
            if got is None:
                return None
            if got[1] < time.monotonic():
                del self._where[key]
                return None
            self._where.move_to_end(key)
            return got[0]

    def _remember(self, key: str, loc: Location, ttl_s: float = float("inf")) -> Location:
        with self._lock:
            self._where[key] = (loc, time.monotonic() + ttl_s)
            while len(self._where) > CACHE_SIZE:
                self._where.popitem(last=False)
        return loc

    def forget(self, key: str) -> None:
        """The cached place answered that `key` is not there (moved, or never was): look again next time."""
        with self._lock:
            self._where.pop(key, None)

    # processes ------------------------------------------------------------------------------------------
    def process(self, pid: str) -> Location:
        """Where process `pid` is scheduled (NotLocated naming every place asked)."""
        if self.is_local(pid):
            return Location("local")
        got = self._cached(pid)
        if got is not None:
            return got
        looked: list[str] = []
        unsure = False
        for peer in self.peers:
            try:
                reply = net.call("GET", f"{peer}/{q(pid)}/slot/current", timeout=PROBE_TIMEOUT_S)
            except net.NetError as exc:
                looked.append(f"peer {peer}: no answer ({exc})")
                unsure = True
                continue
            if reply.status == 200:
                return self._remember(pid, Location("peer", peer))
            looked.append(f"peer {peer}: HTTP {reply.status}")
            unsure = unsure or reply.status >= 500 or reply.status == 429
        if self.gateway is not None:
            try:
                return self._from_gateway(pid, looked)
            except NotLocated:
                pass                # `looked` says why
            except BridgeError as exc:
                unsure = _gateway_failed(exc, looked) or unsure
        else:
            looked.append("no --gateway to ask for a Scheduler-Location")
        if not self.peers:
            looked.insert(0, "no --peer configured")
        raise NotLocated(f"process {pid} is not scheduled on this node; " + "; ".join(looked), unsure=unsure)

    def _from_gateway(self, pid: str, looked: list[str]) -> Location:
        assert self.gateway is not None
        try:
            tx = self.gateway.transaction(pid)
        except BridgeNotFound:
            looked.append(f"gateway {self.gateway.base}: no transaction {pid}")
            raise NotLocated("", unsure=False) from None
        scheduler = tx.tag("Scheduler")
        if tx.tag("Type") != "Process" or not scheduler:
            looked.append(f"gateway {self.gateway.base}: {pid} is not a process with a Scheduler tag")
            raise NotLocated("", unsure=False)
        if scheduler == self.own_address:
            looked.append(f"gateway {self.gateway.base}: {pid} names this node as its Scheduler, but it is not here")
            raise NotLocated("", unsure=False)
        return self._remember(pid, self._su_of(scheduler), SU_TTL_S)

    def _su_of(self, scheduler: str) -> Location:
        assert self.gateway is not None
        if self.su_url:
            return Location("su", self.su_url)
        try:
            url = check_base_url(self.gateway.scheduler_url(scheduler), "Scheduler-Location Url")
        except ValueError as exc:
            raise BridgeNotFound(f"Scheduler-Location of {scheduler}: {exc}") from None
        return Location("su", url)

    # spawns -------------------------------------------------------------------------------------------------
    def scheduler(self, address: str) -> Location:
        """Where a new process naming `address` as its Scheduler is to be spawned."""
        if address == self.own_address:
            return Location("local")
        got = self._cached("scheduler:" + address)
        if got is not None:
            return got
        looked: list[str] = []
        unsure = False
        for peer in self.peers:
            known = self._peer_address.get(peer)
            if known is None:
                try:
                    reply = net.call("GET", f"{peer}/~meta@1.0/info/address", timeout=PROBE_TIMEOUT_S)
                except net.NetError as exc:
                    looked.append(f"peer {peer}: no answer ({exc})")
                    unsure = True
                    continue
                if reply.status != 200:
                    looked.append(f"peer {peer}: HTTP {reply.status} for its address")
                    unsure = unsure or reply.status >= 500
                    continue
                known = self._peer_address[peer] = reply.body.decode("utf-8", "replace").strip()
            if known == address:
                return self._remember("scheduler:" + address, Location("peer", peer))
            looked.append(f"peer {peer} is {known}")
        if self.gateway is not None:
            try:
                return self._remember("scheduler:" + address, self._su_of(address), SU_TTL_S)
            except BridgeError as exc:
                unsure = _gateway_failed(exc, looked) or unsure
        else:
            looked.append("no --gateway to ask for a Scheduler-Location")
        raise NotLocated(f"no scheduler {address} known; " + "; ".join(looked), unsure=unsure)
