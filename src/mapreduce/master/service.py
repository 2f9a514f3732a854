"""The Master gRPC servicer: translate a request to an event, call the driver, translate back.

No scheduling decision is made here.  Invalid requests get INVALID_ARGUMENT,
unknown jobs NOT_FOUND, and a refused submission FAILED_PRECONDITION; no
request can crash the server.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from mapreduce.core import actions as act
from mapreduce.core import events as ev
from mapreduce.core.tasks import TaskKind
from mapreduce.dataflow.commit import OutputCommitter
from mapreduce.errors import MapReduceError
from mapreduce.master.driver import JobEntry, MasterDriver
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc._generated import mapreduce_pb2_grpc as pb_grpc

HEARTBEAT_INTERVAL = 1.0
#: How long an idle worker's request for a task may wait for one.
LONG_POLL_SECONDS = 0.5

F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """Map bad requests to gRPC status codes instead of internal errors."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except convert.BadMessage as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown id {exc}")

    return wrapper  # type: ignore[return-value]


class MasterService(pb_grpc.MasterServicer):
    def __init__(self, driver: MasterDriver) -> None:
        self.driver = driver
        self._specs: dict[str, pb.JobSpec] = {}

    def _now(self) -> float:
        return self.driver.now()

    @_guarded
    def RegisterWorker(
        self, request: pb.RegisterWorkerRequest, context: grpc.ServicerContext
    ) -> pb.RegisterWorkerReply:
        if request.protocol_version != convert.PROTOCOL_VERSION:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version {request.protocol_version} != master's "
                f"{convert.PROTOCOL_VERSION}",
            )
        w = request.worker
        if not w.worker_id or not w.incarnation or not request.shuffle_address:
            raise convert.BadMessage("worker id, incarnation and shuffle address are required")
        self.driver.handle(
            ev.WorkerRegistered(
                self._now(),
                w.worker_id,
                w.incarnation,
                request.shuffle_address,
                max(1, request.slots),
            )
        )
        interval = min(HEARTBEAT_INTERVAL, self.driver.state.config.worker_timeout / 4)
        return pb.RegisterWorkerReply(heartbeat_interval=interval)

    @_guarded
    def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.HeartbeatReply:
        w = request.worker
        progressed = tuple(convert.attempt_from_pb(a) for a in request.progressed)
        running = [convert.attempt_from_pb(a) for a in request.running]
        with self.driver.lock:
            out = self.driver.handle(
                ev.HeartbeatReceived(self._now(), w.worker_id, w.incarnation, progressed)
            )
            reregister = any(isinstance(a, act.ReRegisterWorker) for a in out)
            # Kill every attempt the worker runs that the master does not: a kill
            # lost with a reply is sent again with the next one.
            kills = [ref for ref in running if not self.driver.attempt_running(ref)]
            finished = list(self.driver.finished_jobs)
        return pb.HeartbeatReply(
            kill=[convert.attempt_to_pb(k) for k in kills],
            reregister=reregister,
            finished_jobs=finished[-100:],
        )

    @_guarded
    def RequestTask(
        self, request: pb.RequestTaskRequest, context: grpc.ServicerContext
    ) -> pb.RequestTaskReply:
        w = request.worker
        deadline = time.monotonic() + LONG_POLL_SECONDS
        with self.driver.lock:
            # Long poll: an idle worker's request waits (briefly) for work to appear, so
            # tasks start at once without workers polling the master in a tight loop.
            while True:
                out = self.driver.handle(
                    ev.TaskRequested(self._now(), w.worker_id, w.incarnation, request.free_slots)
                )
                remaining = deadline - time.monotonic()
                if out or remaining <= 0 or self.driver.stopped or not context.is_active():
                    break
                self.driver.changed.wait(remaining)
            reply = pb.RequestTaskReply(
                reregister=any(isinstance(a, act.ReRegisterWorker) for a in out)
            )
            specs: set[str] = set()
            for action in out:
                if not isinstance(action, act.AssignTask):
                    continue
                entry = self.driver.jobs[action.job_id]
                ref = ev.AttemptRef(action.job_id, action.kind, action.index, action.attempt)
                assignment = pb.TaskAssignment(
                    attempt=convert.attempt_to_pb(ref),
                    skip=list(action.skip),
                    num_maps=len(entry.shipped.splits),
                )
                if action.kind is TaskKind.MAP:
                    assignment.split.CopyFrom(
                        convert.split_to_pb(entry.shipped.splits[action.index])
                    )
                reply.tasks.append(assignment)
                if action.job_id not in specs:
                    specs.add(action.job_id)
                    reply.jobs.append(self._spec_without_splits(action.job_id))
            return reply

    def _spec_without_splits(self, job_id: str) -> pb.JobSpec:
        """The job's spec for workers (code, plan), built once per job."""
        spec = self._specs.get(job_id)
        if spec is None:
            shipped = self.driver.jobs[job_id].shipped
            spec = convert.job_to_pb(dataclasses.replace(shipped, splits=()))
            self._specs[job_id] = spec
        return spec

    def _succeeded(
        self,
        request: pb.ReportMapDoneRequest | pb.ReportReduceDoneRequest,
        event_type: type[ev.MapTaskSucceeded] | type[ev.ReduceTaskSucceeded],
    ) -> pb.Ack:
        ref = convert.attempt_from_pb(request.attempt)
        w = request.worker
        stats = request.stats
        event = event_type(
            self._now(), w.worker_id, w.incarnation, ref, stats.output_bytes, dict(stats.counters)
        )
        self.driver.handle(event, convert.stats_from_pb(ref, stats), request.log)
        return pb.Ack()

    @_guarded
    def ReportMapDone(
        self, request: pb.ReportMapDoneRequest, context: grpc.ServicerContext
    ) -> pb.Ack:
        return self._succeeded(request, ev.MapTaskSucceeded)

    @_guarded
    def RequestCommit(
        self, request: pb.RequestCommitRequest, context: grpc.ServicerContext
    ) -> pb.RequestCommitReply:
        ref = convert.attempt_from_pb(request.attempt)
        w = request.worker
        out = self.driver.handle(
            ev.ReduceCommitRequested(self._now(), w.worker_id, w.incarnation, ref)
        )
        return pb.RequestCommitReply(granted=any(isinstance(a, act.GrantCommit) for a in out))

    @_guarded
    def ReportReduceDone(
        self, request: pb.ReportReduceDoneRequest, context: grpc.ServicerContext
    ) -> pb.Ack:
        return self._succeeded(request, ev.ReduceTaskSucceeded)

    @_guarded
    def ReportTaskFailed(
        self, request: pb.ReportTaskFailedRequest, context: grpc.ServicerContext
    ) -> pb.Ack:
        ref = convert.attempt_from_pb(request.attempt)
        w = request.worker
        self.driver.handle(
            ev.TaskFailed(
                self._now(),
                w.worker_id,
                w.incarnation,
                ref,
                request.reason,
                request.record,
                request.traceback,
            ),
            log=request.log,
        )
        return pb.Ack()

    @_guarded
    def ReportFetchFailed(
        self, request: pb.ReportFetchFailedRequest, context: grpc.ServicerContext
    ) -> pb.Ack:
        ref = convert.attempt_from_pb(request.reduce_attempt)
        w = request.worker
        self.driver.handle(
            ev.FetchFailed(
                self._now(),
                w.worker_id,
                w.incarnation,
                ref,
                request.map_index,
                request.map_attempt,
            )
        )
        return pb.Ack()

    @_guarded
    def GetMapOutputs(
        self, request: pb.GetMapOutputsRequest, context: grpc.ServicerContext
    ) -> pb.GetMapOutputsReply:
        ref = convert.attempt_from_pb(request.reduce_attempt)
        with self.driver.lock:
            log = self.driver.jobs[ref.job_id].output_log
            entries = log[request.since :]
            alive = self.driver.attempt_running(ref) and self.driver.state.is_current(
                request.worker.worker_id, request.worker.incarnation
            )
            return pb.GetMapOutputsReply(
                outputs=[
                    pb.MapOutputLocation(
                        map_index=i, map_attempt=a, address=addr, retracted=retracted
                    )
                    for i, a, addr, retracted in entries
                ],
                attempt_alive=alive,
                next=len(log),
            )

    @_guarded
    def SubmitJob(
        self, request: pb.SubmitJobRequest, context: grpc.ServicerContext
    ) -> pb.SubmitJobReply:
        shipped = convert.job_from_pb(request.spec)
        job_id = shipped.plan.job_id
        with self.driver.lock:
            if job_id in self.driver.jobs:
                return pb.SubmitJobReply(job_id=job_id)  # a retried submission
            for other in self.driver.jobs.values():
                if other.shipped.output == shipped.output and other.finished is None:
                    context.abort(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"job {other.shipped.plan.job_id} already writes to {shipped.output}",
                    )
            committer = OutputCommitter(shipped.output, job_id, overwrite=request.overwrite)
            try:
                committer.prepare()
            except (MapReduceError, OSError) as exc:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            now = self._now()
            self.driver.jobs[job_id] = JobEntry(shipped, committer, now)
            self.driver.handle(
                ev.JobSubmitted(
                    now,
                    job_id,
                    len(shipped.splits),
                    shipped.plan.num_reducers,
                    max(1, request.max_attempts or 4),
                    request.skip_bad_records,
                    request.backup_tasks,
                )
            )
        return pb.SubmitJobReply(job_id=job_id)

    def _job_status(self, job_id: str) -> pb.JobStatus:
        from mapreduce.web.views import job_brief

        brief = job_brief(self.driver, job_id)
        entry = self.driver.jobs[job_id]
        return pb.JobStatus(
            job_id=job_id,
            state=brief["state"],
            reason=brief["reason"],
            maps_total=brief["maps"]["total"],
            maps_done=brief["maps"]["completed"],
            reduces_total=brief["reduces"]["total"],
            reduces_done=brief["reduces"]["completed"],
            failed_attempts=brief["failed_attempts"],
            summary_json=entry.summary_json,
            failures=[f.line() for f in entry.failures],
            elapsed_seconds=brief["elapsed_seconds"],
            input_bytes_done=brief["input_bytes_done"],
            input_bytes_total=brief["input_bytes_total"],
        )

    @_guarded
    def GetJobStatus(
        self, request: pb.GetJobStatusRequest, context: grpc.ServicerContext
    ) -> pb.JobStatus:
        with self.driver.lock:
            return self._job_status(request.job_id)

    @_guarded
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Ack:
        with self.driver.lock:
            if request.job_id not in self.driver.state.jobs:
                raise KeyError(request.job_id)
            self.driver.handle(ev.JobCancelled(self._now(), request.job_id))
        return pb.Ack()

    @_guarded
    def GetClusterStatus(
        self, request: pb.GetClusterStatusRequest, context: grpc.ServicerContext
    ) -> pb.ClusterStatus:
        with self.driver.lock:
            now = self._now()
            workers = [
                pb.WorkerStatus(
                    worker_id=w.worker_id,
                    address=w.address,
                    slots=w.slots,
                    running=len(w.running),
                    last_heartbeat_age=now - w.last_heartbeat,
                )
                for w in sorted(self.driver.state.workers.values(), key=lambda w: w.worker_id)
            ]
            jobs = [self._job_status(job_id) for job_id in self.driver.state.queue]
        return pb.ClusterStatus(workers=workers, jobs=jobs)

    @_guarded
    def GetTaskLogs(
        self, request: pb.GetTaskLogsRequest, context: grpc.ServicerContext
    ) -> pb.TaskLogs:
        from mapreduce.web.views import task_logs_view

        view = task_logs_view(self.driver, request.job_id, request.task)
        return pb.TaskLogs(
            attempts=[
                pb.AttemptLog(
                    attempt=a["attempt"],
                    worker=a["worker"],
                    state=a["state"],
                    log=a["log"],
                    error=a["error"],
                )
                for a in view["attempts"]
            ]
        )


def serve_master(
    listen: str, driver: MasterDriver, max_workers: int = 128
) -> tuple[grpc.Server, int]:
    """Start the Master service on ``listen`` (port 0: any); return the server and its port."""
    server, port = convert.start_grpc_server(
        listen,
        lambda server: pb_grpc.add_MasterServicer_to_server(MasterService(driver), server),
        max_workers,
        "master-rpc",
    )
    driver.start()
    return server, port
