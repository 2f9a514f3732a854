"""Submitting jobs to a master and following them: used by ``submit``, ``status`` and ``run``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import grpc

from mapreduce.errors import JobFailedError, MapReduceError, UsageError
from mapreduce.planning import JobOptions, plan_job
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc._generated import mapreduce_pb2_grpc as pb_grpc

#: Largest total size of a job's code (job file and --py-files).
MAX_JOB_CODE_BYTES = 16 << 20


def connect(master: str) -> pb_grpc.MasterStub:
    channel = grpc.insecure_channel(master, options=convert.GRPC_OPTIONS)
    return pb_grpc.MasterStub(channel)


def _py_files(paths: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    """Helper modules (files, or package directories) shipped beside the job file."""
    shipped = []
    for path in paths:
        if os.path.isdir(path):
            base = os.path.dirname(os.path.abspath(path))
            for root, _dirs, names in os.walk(path):
                for name in sorted(names):
                    if name.endswith(".py"):
                        full = os.path.join(root, name)
                        with open(full, "rb") as f:
                            shipped.append((os.path.relpath(full, base), f.read()))
        elif os.path.isfile(path):
            with open(path, "rb") as f:
                shipped.append((os.path.basename(path), f.read()))
        else:
            raise UsageError(f"--py-files {path}: no such file or directory")
    return tuple(shipped)


def build_submission(
    options: JobOptions,
    py_files: tuple[str, ...] = (),
    max_attempts: int = 4,
    backup_tasks: bool = True,
) -> pb.SubmitJobRequest:
    """Plan the job here (splits, sampling) and package it with its code."""
    if max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    _job, plan, splits = plan_job(options)
    with open(options.job_path, "rb") as f:
        source = f.read()
    extra = _py_files(py_files)
    if len(source) + sum(len(c) for _n, c in extra) > MAX_JOB_CODE_BYTES:
        raise UsageError(f"the job's code is larger than {MAX_JOB_CODE_BYTES >> 20} MiB")
    shipped = convert.ShippedJob(
        plan=plan,
        job_file_name=os.path.basename(options.job_path),
        job_source=source,
        py_files=extra,
        output=os.path.normpath(os.path.abspath(options.output)),
        splits=tuple(splits),
    )
    return pb.SubmitJobRequest(
        spec=convert.job_to_pb(shipped),
        overwrite=options.overwrite,
        max_attempts=max_attempts,
        skip_bad_records=options.skip_bad_records,
        backup_tasks=backup_tasks,
    )


def submit(stub: pb_grpc.MasterStub, request: pb.SubmitJobRequest) -> str:
    try:
        reply = stub.SubmitJob(request, timeout=60)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            raise UsageError(str(exc.details())) from None
        raise MapReduceError(f"submitting the job failed: {exc.code()}: {exc.details()}") from None
    return reply.job_id


def wait_for(
    stub: pb_grpc.MasterStub,
    job_id: str,
    on_status: Callable[[pb.JobStatus], None] | None = None,
    every: float = 0.1,
    workers_alive: Callable[[], bool] | None = None,
) -> dict[str, object]:
    """Poll until the job ends; return its summary, or raise :class:`JobFailedError`.

    Args:
        on_status: called with every status polled (a progress display).
        every: seconds between polls.
        workers_alive: for an embedded cluster: ends the wait when every worker died.
    """
    while True:
        if workers_alive is not None and not workers_alive():
            raise JobFailedError(f"job {job_id} failed: every worker process exited")
        status = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=30)
        if on_status is not None:
            on_status(status)
        if status.state == "succeeded" and status.summary_json:
            summary: dict[str, object] = json.loads(status.summary_json)
            return summary
        if status.state in ("failed", "cancelled"):
            raise JobFailedError(f"job {job_id} {status.state}: {status.reason}")
        time.sleep(every)
