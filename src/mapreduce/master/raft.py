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


#: Kinds of the pieces a replicated command carries.
RECORD, SNAPSHOT = 0, 1
#: The most bytes of records one Raft entry carries (PySyncObj sends larger entries in a
#: separate transmission, which failed under load in our measurements), and of one piece.
ENTRY_BYTES = 48 << 10
PIECE_BYTES = 32 << 10

#: (kind, more pieces follow, data, for a snapshot: how many records it covers)
Piece = tuple[int, bool, bytes, int]


class ReplicatedLog(SyncObjConsumer):  # type: ignore[misc]
    """The replicated state: the newest snapshot, the records after it, and who leads.

    Its methods marked ``@replicated`` run on every candidate, in log order, once
    committed; they must stay deterministic.  Records and snapshots travel in pieces
    of at most :data:`PIECE_BYTES`, several to an entry.
    """

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: bytes | None = None
        self.records: list[bytes] = []
        #: records appended since the beginning, the snapshot's included
        self.total = 0
        #: the gRPC address each term's leader announced, newest last
        self.leaders: dict[int, str] = {}
        self.partial = [b"", b""]  # a record and a snapshot whose last pieces are to come

    @replicated  # type: ignore[untyped-decorator]
    def extend(self, pieces: list[Piece]) -> int:
        for kind, more, data, upto in pieces:
            self.partial[kind] += data
            if more:
                continue
            whole, self.partial[kind] = self.partial[kind], b""
            if kind == RECORD:
                self.records.append(whole)
                self.total += 1
            else:  # the state after the first `upto` records: drop those
                drop = len(self.records) - (self.total - upto)
                if drop >= 0:
                    del self.records[:drop]
                    self.snapshot = whole
        return self.total

    @replicated  # type: ignore[untyped-decorator]
    def announce(self, term: int, address: str) -> None:
        self.leaders[term] = address
        for old in sorted(self.leaders)[:-8]:
            del self.leaders[old]


def pieces_of(kind: int, data: bytes, upto: int = 0) -> list[Piece]:
    """``data`` cut into pieces (an empty one still makes one piece)."""
    cuts = range(0, max(len(data), 1), PIECE_BYTES)
    return [
        (kind, start + PIECE_BYTES < len(data), data[start : start + PIECE_BYTES], upto)
        for start in cuts
    ]


class RaftJournal:
    """A :class:`~mapreduce.master.journal.Journal` replicated among master candidates.

    Args:
        self_address: this candidate's Raft ``host:port``.
        peers: the other candidates' Raft addresses.
        secret: the cluster secret (PySyncObj's password).
        directory: where PySyncObj keeps its journal and dumps.
        grpc_address: the address clients reach this candidate's master service at.
        on_deposed: called (from PySyncObj's thread) when this candidate stops leading.
        election_timeout: the range a follower waits, without hearing from a leader, before
            it stands for election (PySyncObj's raftMinTimeout and raftMaxTimeout).
    """

    def __init__(
        self,
        self_address: str,
        peers: list[str],
        secret: bytes,
        directory: str,
        grpc_address: str,
        on_deposed: Callable[[], None] | None = None,
        election_timeout: tuple[float, float] = (0.4, 1.4),
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
        self._sent = 0  # every append up to this one is on its way
        self._pending: list[Piece] = []  # pieces of the appends not sent yet
        self._base = 0  # records committed before this candidate took the lead
        self._failed: str | None = None
        self._since_snapshot = 0
        self._led = False
        conf = SyncObjConf(
            password=secret.decode("utf-8", "surrogateescape"),
            journalFile=os.path.join(directory, "raft.journal"),
            fullDumpFile=os.path.join(directory, "raft.dump"),
            raftMinTimeout=election_timeout[0],
            raftMaxTimeout=election_timeout[1],
            connectionTimeout=max(3.5, election_timeout[1]),
            leaderFallbackTimeout=3.0,
            autoTickPeriod=0.005,
            appendEntriesPeriod=0.02,
            # Our entries are batches already (a sync sends every record queued): send each
            # at once instead of waiting for PySyncObj's next batch (measured: 1.7x faster).
            appendEntriesUseBatch=False,
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
        """Queue ``record``; it is sent (with the others queued) when somebody syncs."""
        with self._cond:
            if self._failed:
                raise NotLeader(self._failed)
            self._next += 1
            self._since_snapshot += 1
            self._pending.extend(pieces_of(RECORD, record))
            return self._next

    def _send_pending(self) -> None:
        """Send the queued pieces in entries of at most :data:`ENTRY_BYTES` (lock held)."""
        if not self._pending:
            return
        batch: list[Piece] = []
        size = 0
        for piece in self._pending:
            if batch and size + len(piece[2]) > ENTRY_BYTES:
                self._send(batch, last=False)
                batch, size = [], 0
            batch.append(piece)
            size += len(piece[2])
        self._send(batch, last=True)
        self._pending = []
        self._sent = self._next

    def _send(self, pieces: list[Piece], last: bool) -> None:
        """One entry; the last of a flush confirms every append up to the newest."""
        number = self._next if last else 0

        def done(result: Any, error: int) -> None:
            self._committed(number, error)

        self.log.extend(pieces, callback=done)

    def _committed(self, number: int, error: int) -> None:
        """An entry committed (entries commit in the order they were sent)."""
        with self._cond:
            if error != FAIL_REASON.SUCCESS:
                self._failed = f"a record was not committed (PySyncObj reason {error})"
            elif number:
                self._done = max(self._done, number)
            self._cond.notify_all()

    def sync(self, seq: int) -> None:
        """Block until record ``seq`` (and every one before it) is committed.

        Raises:
            NotLeader: it was not, or this candidate stopped leading: act on nothing.
        """
        deadline = time.monotonic() + COMMIT_TIMEOUT
        with self._cond:
            if seq > self._sent:
                self._send_pending()  # group commit: every record queued so far, together
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
            self._pending.extend(pieces_of(SNAPSHOT, payload, upto))
            self._send_pending()

    def close(self) -> None:
        self.node.destroy()
