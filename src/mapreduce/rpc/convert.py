"""The only module that knows both the protobuf messages and the Python values.

Also the gRPC options every server and channel uses: message size limits are
set explicitly (gRPC's default receive limit is 4 MiB).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent import futures

import grpc

from mapreduce.core import spec as spec_rules
from mapreduce.core.events import AttemptRef, MapOutputRef
from mapreduce.core.spec import InputSplit, JobSpec
from mapreduce.core.tasks import MAX_COUNTER_NAME, MAX_COUNTERS, TaskKind, TaskStats
from mapreduce.dataflow.runner import TaskResult
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc.health import Health
from mapreduce.rpc.security import Security

PROTOCOL_VERSION = 3

#: Largest message accepted or sent: job specs carry the job's code.
MAX_MESSAGE_BYTES = 64 << 20
#: Shuffle data is streamed in chunks of this size.
CHUNK_BYTES = 1 << 20

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]

_KINDS = {TaskKind.MAP: pb.MAP, TaskKind.REDUCE: pb.REDUCE}
_KINDS_BACK = {v: k for k, v in _KINDS.items()}


class BadMessage(ValueError):
    """A request carries an invalid value (answered with INVALID_ARGUMENT)."""


def attempt_to_pb(ref: AttemptRef) -> pb.AttemptId:
    return pb.AttemptId(
        job_id=ref.job_id, kind=_KINDS[ref.kind], index=ref.index, attempt=ref.attempt
    )


def attempt_from_pb(msg: pb.AttemptId) -> AttemptRef:
    if msg.kind not in _KINDS_BACK:
        raise BadMessage(f"unknown task kind {msg.kind}")
    check_job_id(msg.job_id)
    return AttemptRef(msg.job_id, _KINDS_BACK[msg.kind], msg.index, msg.attempt)


def map_output_to_pb(ref: MapOutputRef) -> pb.MapOutputId:
    return pb.MapOutputId(job_id=ref.job_id, map_index=ref.index, map_attempt=ref.attempt)


def map_output_from_pb(msg: pb.MapOutputId) -> MapOutputRef:
    check_job_id(msg.job_id)
    return MapOutputRef(msg.job_id, msg.map_index, msg.map_attempt)


def check_job_id(job_id: str) -> str:
    """Job ids name directories on the master and the workers: letters, digits, ``_.-``."""
    try:
        return spec_rules.check_job_id(job_id)
    except spec_rules.InvalidSpec as exc:
        raise BadMessage(str(exc)) from None


def split_to_pb(split: InputSplit) -> pb.InputSplit:
    return pb.InputSplit(path=split.path, start=split.start, end=split.end)


def split_from_pb(msg: pb.InputSplit) -> InputSplit:
    return InputSplit(msg.path, msg.start, msg.end)


def job_to_pb(spec: JobSpec) -> pb.JobSpec:
    return pb.JobSpec(
        job_id=spec.job_id,
        job_file_name=spec.job_file_name,
        job_source=spec.job_source,
        py_files=[pb.ShippedFile(name=n, content=c) for n, c in spec.py_files],
        input_format=spec.input_format,
        num_reducers=spec.num_reducers,
        params=spec.params,
        memory_bytes=spec.memory_bytes,
        use_combiner=spec.use_combiner,
        has_boundaries=spec.boundaries is not None,
        boundaries=list(spec.boundaries or ()),
        output=spec.output,
        splits=[split_to_pb(s) for s in spec.splits],
        overwrite=spec.overwrite,
        max_attempts=spec.max_attempts,
        skip_bad_records=spec.skip_bad_records,
        backup_tasks=spec.backup_tasks,
        storage_options=spec.storage_options,
    )


def job_from_pb(msg: pb.JobSpec) -> JobSpec:
    """The spec a message carries, validated.  Raises BadMessage naming the bad field."""
    try:
        return JobSpec(
            job_id=msg.job_id,
            job_file_name=msg.job_file_name,
            input_format=msg.input_format,
            num_reducers=msg.num_reducers,
            params=dict(msg.params),
            memory_bytes=msg.memory_bytes,
            use_combiner=msg.use_combiner,
            boundaries=tuple(msg.boundaries) if msg.has_boundaries else None,
            output=msg.output,
            splits=tuple(split_from_pb(s) for s in msg.splits),
            overwrite=msg.overwrite,
            max_attempts=msg.max_attempts,
            skip_bad_records=msg.skip_bad_records,
            backup_tasks=msg.backup_tasks,
            job_source=msg.job_source,
            py_files=tuple((f.name, f.content) for f in msg.py_files),
            storage_options=dict(msg.storage_options),
        ).validate()
    except spec_rules.InvalidSpec as exc:
        raise BadMessage(str(exc)) from None


def stats_to_pb(result: TaskResult) -> pb.TaskStats:
    return pb.TaskStats(
        input_records=result.input_records,
        input_bytes=result.input_bytes,
        output_records=result.output_records,
        output_bytes=result.output_bytes,
        spills=result.spills,
        seconds=result.seconds,
        counters=result.counters,
        partition_sizes=list(result.output_sizes),
    )


def stats_from_pb(msg: pb.TaskStats) -> TaskStats:
    """A report's stats.  Raises BadMessage: too many counters, or too long a name."""
    if len(msg.counters) > MAX_COUNTERS:
        raise BadMessage(f"at most {MAX_COUNTERS} counters a task (got {len(msg.counters)})")
    if any(len(name) > MAX_COUNTER_NAME for name in msg.counters):
        raise BadMessage(f"counter names are at most {MAX_COUNTER_NAME} characters")
    seconds = msg.seconds if math.isfinite(msg.seconds) and msg.seconds >= 0 else 0.0
    return TaskStats(
        input_records=msg.input_records,
        input_bytes=msg.input_bytes,
        output_records=msg.output_records,
        output_bytes=msg.output_bytes,
        spills=msg.spills,
        seconds=seconds,
        counters=dict(msg.counters),
    )


def start_grpc_server(
    listen: str,
    register: Callable[[grpc.Server], None],
    max_workers: int,
    name: str,
    security: Security | None = None,
    health: Health | None = None,
) -> tuple[grpc.Server, int]:
    """Start a gRPC server on ``listen`` (port 0: any) with our options; return it and its port.

    Args:
        register: adds the servicer(s) to the server.
        max_workers: request threads.
        name: prefix of the thread names.
        security: the cluster secret every call must carry (none: no check).
        health: the ``grpc.health.v1`` statuses the server reports (NOT_SERVING until set).

    Raises:
        OSError: the address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name),
        options=GRPC_OPTIONS,
        interceptors=(security or Security()).interceptors(),
    )
    register(server)
    if health is not None:
        health.register(server)
    port = (security or Security()).add_port(server, listen)
    server.start()
    return server, port
