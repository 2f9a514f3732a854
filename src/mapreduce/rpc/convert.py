"""The only module that knows both the protobuf messages and the Python values.

Also the gRPC options every server and channel uses: message size limits are
set explicitly (gRPC's default receive limit is 4 MiB).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc

from mapreduce.core.events import AttemptRef
from mapreduce.core.tasks import TaskKind
from mapreduce.dataflow.runner import JobPlan, TaskResult
from mapreduce.dataflow.splits import InputSplit
from mapreduce.rpc._generated import mapreduce_pb2 as pb

PROTOCOL_VERSION = 1

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


@dataclass(frozen=True)
class ShippedJob:
    """A job as submitted: its plan, its code and where its output goes."""

    plan: JobPlan
    job_file_name: str
    job_source: bytes
    py_files: tuple[tuple[str, bytes], ...]
    output: str
    splits: tuple[InputSplit, ...]


def attempt_to_pb(ref: AttemptRef) -> pb.AttemptId:
    return pb.AttemptId(
        job_id=ref.job_id, kind=_KINDS[ref.kind], index=ref.index, attempt=ref.attempt
    )


def attempt_from_pb(msg: pb.AttemptId) -> AttemptRef:
    if msg.kind not in _KINDS_BACK:
        raise BadMessage(f"unknown task kind {msg.kind}")
    check_job_id(msg.job_id)
    return AttemptRef(msg.job_id, _KINDS_BACK[msg.kind], msg.index, msg.attempt)


def split_to_pb(split: InputSplit) -> pb.InputSplit:
    return pb.InputSplit(path=split.path, start=split.start, end=split.end)


def split_from_pb(msg: pb.InputSplit) -> InputSplit:
    return InputSplit(msg.path, msg.start, msg.end)


def job_to_pb(job: ShippedJob) -> pb.JobSpec:
    plan = job.plan
    return pb.JobSpec(
        job_id=plan.job_id,
        job_file_name=job.job_file_name,
        job_source=job.job_source,
        py_files=[pb.ShippedFile(name=n, content=c) for n, c in job.py_files],
        input_format=plan.input_format,
        num_reducers=plan.num_reducers,
        params=plan.params,
        memory_bytes=plan.memory_bytes,
        use_combiner=plan.use_combiner,
        has_boundaries=plan.boundaries is not None,
        boundaries=list(plan.boundaries or ()),
        output=job.output,
        splits=[split_to_pb(s) for s in job.splits],
    )


def _safe_name(name: str) -> str:
    parts = name.split("/")
    if not name or os.path.isabs(name) or ".." in parts or "" in parts or "\0" in name:
        raise BadMessage(f"shipped file name {name!r} must be a relative path without '..'")
    return name


_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_job_id(job_id: str) -> str:
    """Job ids name directories on the master and the workers: letters, digits, ``_.-``."""
    if not _JOB_ID.match(job_id) or ".." in job_id:
        raise BadMessage(f"invalid job id {job_id!r}")
    return job_id


def job_from_pb(msg: pb.JobSpec) -> ShippedJob:
    check_job_id(msg.job_id)
    if msg.num_reducers < 1:
        raise BadMessage("a job needs at least one reducer")
    if not os.path.isabs(msg.output) or os.path.normpath(msg.output) != msg.output:
        raise BadMessage(f"the output {msg.output!r} must be an absolute, normalised path")
    name = _safe_name(msg.job_file_name)
    if "/" in name:
        raise BadMessage("job_file_name must be a base name")
    plan = JobPlan(
        job_id=msg.job_id,
        job_path=name,
        input_format=msg.input_format,
        num_reducers=msg.num_reducers,
        params=dict(msg.params),
        memory_bytes=msg.memory_bytes,
        use_combiner=msg.use_combiner,
        boundaries=tuple(msg.boundaries) if msg.has_boundaries else None,
    )
    return ShippedJob(
        plan=plan,
        job_file_name=name,
        job_source=msg.job_source,
        py_files=tuple((_safe_name(f.name), f.content) for f in msg.py_files),
        output=msg.output,
        splits=tuple(split_from_pb(s) for s in msg.splits),
    )


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


def stats_from_pb(ref: AttemptRef, msg: pb.TaskStats) -> TaskResult:
    prefix = "map" if ref.kind is TaskKind.MAP else "reduce"
    return TaskResult(
        task_id=f"{prefix}-{ref.index:05d}",
        attempt=ref.attempt,
        outputs=(),
        output_sizes=tuple(msg.partition_sizes),
        input_records=msg.input_records,
        input_bytes=msg.input_bytes,
        output_records=msg.output_records,
        output_bytes=msg.output_bytes,
        counters=dict(msg.counters),
        spills=msg.spills,
        seconds=msg.seconds,
    )


def start_grpc_server(
    listen: str, register: Callable[[grpc.Server], None], max_workers: int, name: str
) -> tuple[grpc.Server, int]:
    """Start a gRPC server on ``listen`` (port 0: any) with our options; return it and its port.

    Args:
        register: adds the servicer(s) to the server.
        max_workers: request threads.
        name: prefix of the thread names.

    Raises:
        OSError: the address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name),
        options=GRPC_OPTIONS,
    )
    register(server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server, port
