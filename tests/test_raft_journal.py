"""RaftJournal: three candidates in this process replicate records and snapshots of any size."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapreduce.master.raft import RaftJournal
from tests.daemons import free_port, wait_until

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def journals(tmp_path: Path) -> Iterator[list[RaftJournal]]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    made = [
        RaftJournal(
            address,
            [a for a in addresses if a != address],
            SECRET,
            str(tmp_path / f"node-{i}"),
            f"grpc-{i}:7070",
        )
        for i, address in enumerate(addresses)
    ]
    try:
        yield made
    finally:
        for journal in made:
            journal.close()


def test_records_and_snapshots_of_any_size_reach_every_candidate(
    journals: list[RaftJournal],
) -> None:
    wait_until(lambda: sum(j.is_leader() for j in journals) == 1, "one leader")
    leader = next(j for j in journals if j.is_leader())
    leader.wait_for_leadership(threading.Event())
    rng = random.Random(7)
    before = [rng.randbytes(rng.choice([0, 10, 1000, 300_000])) for _ in range(20)]
    last = 0
    for record in before:
        last = leader.append(record)
    leader.sync(last)
    snapshot = rng.randbytes(1_000_000)  # far larger than one Raft entry
    leader.write_snapshot(snapshot)
    after = [rng.randbytes(rng.choice([5, 70_000])) for _ in range(5)]
    for record in after:
        last = leader.append(record)
    leader.sync(last)
    for journal in journals:
        wait_until(lambda j=journal: j.log.total == 25, "every record on every candidate")
        recovered = journal.recover()
        assert recovered.snapshot == snapshot
        assert recovered.records == after
        assert journal.leader_address() == f"grpc-{journals.index(leader)}:7070"
    assert leader.term() >= 1 and leader.records_since_snapshot() == 5
