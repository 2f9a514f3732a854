"""How the master writes its durable events into journal records, and reads them back.

The frequent events (a task assigned, a result, a commit request, a failure)
are flattened to tuples of plain values and written with :mod:`marshal`:
about eight times cheaper than pickling the dataclasses, which matters at
thousands of decisions a second.  The rare ones (a job's submission with its
whole spec, a master start, a registration) are pickled.  The first byte of a
record says which.  Records come only from this master's own journal (a
private directory): they are trusted like its code.
"""

from __future__ import annotations

import marshal
import pickle
from collections.abc import Callable
from typing import Any

from mapreduce.core import events as ev
from mapreduce.core.tasks import TaskKind, TaskStats

_MARSHAL = b"M"
_PICKLE = b"P"
_KINDS = {kind.value: kind for kind in TaskKind}


def _ref(r: ev.AttemptRef) -> tuple[str, str, int, int]:
    return (r.job_id, r.kind.value, r.index, r.attempt)


def _ref_back(t: tuple[str, str, int, int]) -> ev.AttemptRef:
    return ev.AttemptRef(t[0], _KINDS[t[1]], t[2], t[3])


def _stats(s: TaskStats) -> tuple[Any, ...]:
    return (
        s.input_records,
        s.input_bytes,
        s.output_records,
        s.output_bytes,
        s.spills,
        s.seconds,
        s.counters,
    )


def _stats_back(t: tuple[Any, ...]) -> TaskStats:
    return TaskStats(*t)


def _requested(e: ev.TaskRequested) -> tuple[Any, ...]:
    return (0, e.now, e.worker_id, e.incarnation, e.free_slots)


def _map_done(e: ev.MapTaskSucceeded) -> tuple[Any, ...]:
    return (1, e.now, e.worker_id, e.incarnation, _ref(e.ref), _stats(e.stats), e.has_log)


def _commit(e: ev.ReduceCommitRequested) -> tuple[Any, ...]:
    return (2, e.now, e.worker_id, e.incarnation, _ref(e.ref))


def _reduce_done(e: ev.ReduceTaskSucceeded) -> tuple[Any, ...]:
    return (3, e.now, e.worker_id, e.incarnation, _ref(e.ref), _stats(e.stats), e.has_log)


def _failed(e: ev.TaskFailed) -> tuple[Any, ...]:
    return (
        4,
        e.now,
        e.worker_id,
        e.incarnation,
        _ref(e.ref),
        e.reason,
        e.record,
        e.traceback,
        e.has_log,
        e.infrastructure,
        e.label,
    )


def _fetch_failed(e: ev.FetchFailed) -> tuple[Any, ...]:
    return (5, e.now, e.worker_id, e.incarnation, _ref(e.reduce), e.map_index, e.map_attempt)


_ENCODERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    ev.TaskRequested: _requested,
    ev.MapTaskSucceeded: _map_done,
    ev.ReduceCommitRequested: _commit,
    ev.ReduceTaskSucceeded: _reduce_done,
    ev.TaskFailed: _failed,
    ev.FetchFailed: _fetch_failed,
}

_DECODERS: list[Callable[[tuple[Any, ...]], ev.Event]] = [
    lambda t: ev.TaskRequested(t[1], t[2], t[3], t[4]),
    lambda t: ev.MapTaskSucceeded(t[1], t[2], t[3], _ref_back(t[4]), _stats_back(t[5]), t[6]),
    lambda t: ev.ReduceCommitRequested(t[1], t[2], t[3], _ref_back(t[4])),
    lambda t: ev.ReduceTaskSucceeded(t[1], t[2], t[3], _ref_back(t[4]), _stats_back(t[5]), t[6]),
    # Older records end before ``infrastructure`` (index 9) or before ``label`` (index 10).
    lambda t: ev.TaskFailed(
        t[1],
        t[2],
        t[3],
        _ref_back(t[4]),
        t[5],
        t[6],
        t[7],
        t[8],
        len(t) > 9 and t[9],
        t[10] if len(t) > 10 else "",
    ),
    lambda t: ev.FetchFailed(t[1], t[2], t[3], _ref_back(t[4]), t[5], t[6]),
]


def encode(event: ev.Event) -> bytes:
    """A journal record holding ``event``."""
    encoder = _ENCODERS.get(type(event))
    if encoder is None:
        return _PICKLE + pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL)
    return _MARSHAL + marshal.dumps(encoder(event))


def decode(record: bytes) -> ev.Event:
    """The event a journal record holds.

    Raises:
        ValueError: the record is not one this codec wrote.
    """
    if record[:1] == _MARSHAL:
        flat: tuple[Any, ...] = marshal.loads(record[1:])
        code: int = flat[0]
        return _DECODERS[code](flat)
    if record[:1] == _PICKLE:
        event: ev.Event = pickle.loads(record[1:])
        return event
    raise ValueError(f"unknown journal record type {record[:1]!r}")
