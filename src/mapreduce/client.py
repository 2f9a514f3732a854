"""Submitting jobs to a master and following them: used by ``submit``, ``status``, ``run``...

Every call to the master goes through :func:`call`, which retries while the
master cannot be reached (a master restarting from its ``--state-dir``), for
at most :data:`RETRY_SECONDS`, saying so on stderr once.  Submissions are
idempotent (the job id is chosen here), so a retried ``SubmitJob`` never runs
a job twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from mapreduce.errors import JobFailedError, MapReduceError, MasterUnreachable, UsageError
from mapreduce.planning import JobOptions, plan_job
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc.master_client import MasterClient
from mapreduce.rpc.security import Security

#: How long a client waits for an unreachable master before giving up ($MAPREDUCE_RETRY_SECONDS).
RETRY_SECONDS = float(os.environ.get("MAPREDUCE_RETRY_SECONDS", "120"))
#: Timeout of one call.
CALL_TIMEOUT = 30.0

T = TypeVar("T")


def connect(master: str, security: Security | None = None) -> Any:
    """A stub of the master at ``master`` (``HOST:PORT``, or several separated by commas:
    master candidates, of which it follows the leader); its calls carry the secret."""
    return MasterClient(master, security)


def call(
    method: Callable[..., T],
    request: Any,
    *,
    retry_for: float = RETRY_SECONDS,
    quiet: bool = False,
) -> T:
    """Call the master, retrying while it is unreachable (for ``retry_for`` seconds at most).

    Raises:
        MasterUnreachable: the master did not answer in time.
        grpc.RpcError: the master answered with an error.
    """
    deadline = time.monotonic() + retry_for
    delay = 0.1
    told = False
    while True:
        try:
            return method(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            code = exc.code()
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            if time.monotonic() + delay > deadline:
                raise MasterUnreachable(
                    f"cannot reach the master ({code.name}: {exc.details()}); "
                    f"gave up after {retry_for:.0f}s"
                ) from None
            if not told and not quiet:
                print(
                    f"mapreduce: the master is unreachable ({code.name}); retrying for up to "
                    f"{retry_for:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def build_submission(options: JobOptions) -> pb.SubmitJobRequest:
    """Plan the job here (splits, sampling) and package it with its code."""
    _job, spec = plan_job(options)
    return pb.SubmitJobRequest(spec=convert.job_to_pb(spec))


def submit(stub: Any, request: pb.SubmitJobRequest) -> str:
    try:
        reply: pb.SubmitJobReply = call(stub.SubmitJob, request)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            raise UsageError(str(exc.details())) from None
        raise MapReduceError(f"submitting the job failed: {exc.code()}: {exc.details()}") from None
    return reply.job_id


def wait_for(
    stub: Any,
    job_id: str,
    on_status: Callable[[pb.JobStatus], None] | None = None,
    every: float = 0.1,
    workers_alive: Callable[[], bool] | None = None,
    pause: Callable[[float], None] = time.sleep,
) -> dict[str, object]:
    """Poll until the job ends; return its summary, or raise :class:`JobFailedError`.

    A master that is away (restarting) is waited for, up to :data:`RETRY_SECONDS`
    at a time; the job is followed to its end under the restarted master.

    Args:
        on_status: called with every status polled (a progress display).
        every: seconds between polls.
        workers_alive: for an embedded cluster: ends the wait when every worker died.
        pause: sleeps between polls (given ``every``); one that returns as soon as the job
            ends (as the embedded cluster's does) makes its end seen at once.
    """
    while True:
        if workers_alive is not None and not workers_alive():
            raise JobFailedError(f"job {job_id} failed: every worker process exited", job_id=job_id)
        status: pb.JobStatus = call(stub.GetJobStatus, pb.GetJobStatusRequest(job_id=job_id))
        if on_status is not None:
            on_status(status)
        if status.state == "succeeded" and status.summary_json:
            summary: dict[str, object] = json.loads(status.summary_json)
            return summary
        if status.state in ("failed", "cancelled"):
            failure = status.failure
            raise JobFailedError(
                f"job {job_id} {status.state}: {status.reason}",
                job_id=job_id,
                task=failure.task,
                attempt=failure.attempt if failure.task else -1,
                record=failure.record,
                reason=failure.reason,
                traceback=failure.traceback,
            )
        pause(every)
