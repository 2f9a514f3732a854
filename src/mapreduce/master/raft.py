"""``RaftJournal``: the master's journal replicated among master candidates with Raft.

Three (or five) ``mapreduce master --raft H:P --peers ...`` processes run one
:class:`RaftJournal` each, on PySyncObj (``pysyncobj==0.3.17``; Raft itself is
not written here).  What they replicate is exactly what
:class:`~mapreduce.master.journal.FileJournal` keeps on one disk: the newest
snapshot of the master's state and the records appended after it, as opaque
bytes.  Only the leader runs a master: it appends a record for every durable
event and acts on it only once the record is committed (applied on a majority);
a candidate that becomes leader waits until its own first entry of the new term
is committed (then it has every committed record), rebuilds the master's state
from the replicated snapshot and records, and starts serving.  The Raft term is
the master's epoch.  A leader that loses its leadership stops: its state may
hold decisions that were never committed (the driver restarts the process).

PySyncObj speaks pickle: its traffic is encrypted and authenticated with the
cluster secret (``password``), which is therefore mandatory.  Its journal is an
mmap that is never fsynced: a power loss on a majority at once can lose the
newest entries (a process crash loses nothing).  It has no PreVote: a healed
candidate may force one extra election.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import (
    _RAFT_STATE,
    FAIL_REASON,
    SyncObj,
    SyncObjConf,
    SyncObjConsumer,
    replicated,
)

from mapreduce.master.journal import NotLeader, Recovered

log = logging.getLogger("mapreduce.master.raft")

#: How long a committed record may take before the leader gives up on it (it steps down).
COMMIT_TIMEOUT = 10.0


class ReplicatedLog(SyncObjConsumer):  # type: ignore[misc]
    """The replicated state: the newest snapshot, the records after it, and who leads.

    Its methods marked ``@replicated`` run on every candidate, in log order, once
    committed; they must stay deterministic.
    """

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: bytes | None = None
        self.records: list[bytes] = []
        #: records appended since the beginning, the snapshot's included
        self.total = 0
        #: the gRPC address each term's leader announced, newest last
        self.leaders: dict[int, str] = {}

    @replicated  # type: ignore[untyped-decorator]
    def append(self, record: bytes) -> int:
        self.records.append(record)
        self.total += 1
        return self.total

    @replicated  # type: ignore[untyped-decorator]
    def compact(self, payload: bytes, upto: int) -> None:
        """``payload`` is the state after the first ``upto`` records: drop those."""
        drop = len(self.records) - (self.total - upto)
        if drop >= 0:
            del self.records[:drop]
            self.snapshot = payload

    @replicated  # type: ignore[untyped-decorator]
    def announce(self, term: int, address: str) -> None:
        self.leaders[term] = address
        for old in sorted(self.leaders)[:-8]:
            del self.leaders[old]


class RaftJournal:
    """A :class:`~mapreduce.master.journal.Journal` replicated among master candidates.

    Args:
        self_address: this candidate's Raft ``host:port``.
        peers: the other candidates' Raft addresses.
        secret: the cluster secret (PySyncObj's password).
        directory: where PySyncObj keeps its journal and dumps.
        grpc_address: the address clients reach this candidate's master service at.
        on_deposed: called (from PySyncObj's thread) when this candidate stops leading.
    """

    def __init__(
        self,
        self_address: str,
        peers: list[str],
        secret: bytes,
        directory: str,
        grpc_address: str,
        on_deposed: Callable[[], None] | None = None,
    ) -> None:
        if not secret:
            raise ValueError("a replicated master needs the cluster secret")
        self.replicated = True
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.grpc_address = grpc_address
        self.on_deposed = on_deposed
        self.log = ReplicatedLog()
        self._cond = threading.Condition()
        self._next = 0  # local numbers of this leader's appends
        self._done = 0  # every append up to this one is committed
        self._base = 0  # records committed before this candidate took the lead
        self._outcomes: dict[int, bool] = {}
        self._failed: str | None = None
        self._since_snapshot = 0
        self._led = False
        conf = SyncObjConf(
            password=secret.decode("utf-8", "surrogateescape"),
            journalFile=os.path.join(directory, "raft.journal"),
            fullDumpFile=os.path.join(directory, "raft.dump"),
            leaderFallbackTimeout=3.0,
            connectionRetryTime=1.0,
            dynamicMembershipChange=False,
            onStateChanged=self._state_changed,
            commandsWaitLeader=False,
        )
        self.node = SyncObj(self_address, peers, conf, consumers=[self.log])

    # -- leadership -----------------------------------------------------------------

    def is_leader(self) -> bool:
        return bool(self.node._isLeader())

    def term(self) -> int:
        return int(self.node.raftCurrentTerm)

    def leader_address(self) -> str:
        """The gRPC address of the newest leader that announced itself ("" if none yet)."""
        leaders = self.log.leaders
        return leaders[max(leaders)] if leaders else ""

    def _state_changed(self, old: int, new: int) -> None:
        if new == _RAFT_STATE.LEADER:
            self._led = True
        elif old == _RAFT_STATE.LEADER and self._led:
            self._led = False
            with self._cond:
                self._failed = "this candidate lost its leadership"
                self._cond.notify_all()
            log.warning("this master candidate is no longer the leader")
            if self.on_deposed is not None:
                self.on_deposed()

    def wait_for_leadership(self, stop: threading.Event) -> None:
        """Block until this candidate leads and has applied every committed record."""
        while not stop.is_set():
            if self.is_leader():
                term = self.term()
                try:
                    # Our first entry of the term: once it is applied, so is everything
                    # committed before it (Raft applies in log order).
                    self.log.announce(term, self.grpc_address, sync=True, timeout=COMMIT_TIMEOUT)
                except Exception as exc:  # lost the election meanwhile, or no quorum
                    log.info("could not take the lead in term %d: %s", term, exc)
                    continue
                if self.is_leader() and self.term() == term:
                    self._base = self.log.total
                    return
            stop.wait(0.05)
        raise NotLeader("stopped before this candidate became the leader")

    # -- the Journal interface --------------------------------------------------------

    def recover(self) -> Recovered:
        """The replicated snapshot and records (call once this candidate leads)."""
        return Recovered(self.log.snapshot, list(self.log.records), [])

    def append(self, record: bytes) -> int:
        with self._cond:
            if self._failed:
                raise NotLeader(self._failed)
            self._next += 1
            number = self._next
            self._since_snapshot += 1
        self.log.append(record, callback=lambda result, error: self._committed(number, error))
        return number

    def _committed(self, number: int, error: int) -> None:
        with self._cond:
            self._outcomes[number] = error == FAIL_REASON.SUCCESS
            while self._done + 1 in self._outcomes:
                if not self._outcomes.pop(self._done + 1):
                    self._failed = f"a record was not committed (PySyncObj reason {error})"
                    break
                self._done += 1
            self._cond.notify_all()

    def sync(self, seq: int) -> None:
        """Block until record ``seq`` (and every one before it) is committed.

        Raises:
            NotLeader: it was not, or this candidate stopped leading: act on nothing.
        """
        deadline = time.monotonic() + COMMIT_TIMEOUT
        with self._cond:
            while self._done < seq:
                if self._failed:
                    raise NotLeader(self._failed)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._failed = f"record {seq} was not committed in {COMMIT_TIMEOUT:.0f}s"
                    raise NotLeader(self._failed)
                self._cond.wait(remaining)

    def records_since_snapshot(self) -> int:
        return self._since_snapshot

    def write_snapshot(self, payload: bytes) -> None:
        """Replace the records appended so far by ``payload`` (once committed, everywhere)."""
        with self._cond:
            upto = self._base + self._next  # every record of this leader's, and all before
            self._since_snapshot = 0
        self.log.compact(payload, upto, callback=_ignore)

    def close(self) -> None:
        self.node.destroy()


def _ignore(result: Any, error: int) -> None:
    """A compaction that does not commit changes nothing: the next one will."""
