"""The Master gRPC servicer: translate a request to an event, call the driver, translate back.

No scheduling decision is made here.  Invalid requests get INVALID_ARGUMENT,
unknown jobs NOT_FOUND, and a refused submission FAILED_PRECONDITION; no
request can crash the server.  Every request is checked here, at the edge,
before it becomes an event: specs (:meth:`JobSpec.validate` and this master's
``max_maps``/``max_reducers``), task indexes and attempt numbers of known jobs,
and the size of everything a request asks the master to keep (names, reasons,
tracebacks, logs, counters).
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from mapreduce.core import actions as act
from mapreduce.core import events as ev
from mapreduce.core import queries
from mapreduce.core.spec import JobSpec
from mapreduce.core.tasks import TaskKind
from mapreduce.errors import MapReduceError
from mapreduce.master.driver import MasterDriver
from mapreduce.master.journal import NotLeader
from mapreduce.master.logs import MAX_LOG_CHARS
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc._generated import mapreduce_pb2_grpc as pb_grpc
from mapreduce.rpc.health import Health
from mapreduce.rpc.security import Security

HEARTBEAT_INTERVAL = 1.0
#: How long an idle worker's request for a task may wait for one.
LONG_POLL_SECONDS = 0.5

F = TypeVar("F", bound=Callable[..., Any])


def _held_seconds(requested: float) -> float:
    """How long a long poll asking for ``requested`` seconds may be held (0: not at all)."""
    return min(requested, LONG_POLL_SECONDS) if requested > 0 else 0.0


def _guarded(method: F) -> F:
    """Only a serving master (the leader) answers; bad requests get status codes.

    A master that does not serve (starting, or a follower among candidates) answers
    UNAVAILABLE naming the leader, so clients and workers go there.
    """

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        if not self.driver.serving.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, self.driver.not_serving_reason())
        try:
            return method(self, request, context)
        except convert.BadMessage as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown id {exc}")
        except NotLeader as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"not the leader any more: {exc}")

    return wrapper  # type: ignore[return-value]


#: Caps on what a report may carry (the rest is cut), so no request can grow the master much.
MAX_REASON = 4096
MAX_TRACEBACK = 16 << 10
#: The longest worker id, incarnation and shuffle address a worker may register with.
MAX_WORKER_NAME = 256


class MasterService(pb_grpc.MasterServicer):
    """Translates each request into events for the driver, and snapshots into replies."""

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
        if max(len(w.worker_id), len(w.incarnation), len(request.shuffle_address)) > (
            MAX_WORKER_NAME
        ):
            raise convert.BadMessage(
                f"worker id, incarnation and shuffle address are at most {MAX_WORKER_NAME} "
                "characters"
            )
        if not request.worker_key or len(request.worker_key) > MAX_WORKER_NAME:
            raise convert.BadMessage(
                f"a worker key of 1 to {MAX_WORKER_NAME} characters is required"
            )
        held = tuple(convert.map_output_from_pb(h) for h in request.held)
        refused = self.driver.register(
            ev.WorkerRegistered(
                self._now(),
                w.worker_id,
                w.incarnation,
                request.shuffle_address,
                max(1, min(request.slots, 1024)),
                request.rejoin,
                held,
                tuple(convert.attempt_from_pb(a) for a in request.running),
                key_digest=hashlib.sha256(request.worker_key.encode()).hexdigest(),
            )
        )
        if refused:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, refused)
        with self.driver.lock:
            forget = queries.jobs_to_forget(self.driver.state, {h.job_id for h in held})
            epoch = self.driver.state.epoch
        interval = min(HEARTBEAT_INTERVAL, self.driver.state.config.worker_timeout / 4)
        return pb.RegisterWorkerReply(heartbeat_interval=interval, epoch=epoch, forget_jobs=forget)

    @_guarded
    def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.HeartbeatReply:
        w = request.worker
        progressed = tuple(convert.attempt_from_pb(a) for a in request.progressed)
        running = [convert.attempt_from_pb(a) for a in request.running]
        out, kills, finished = self.driver.heartbeat(
            ev.HeartbeatReceived(
                self._now(), w.worker_id, w.incarnation, progressed, request.paused[:MAX_REASON]
            ),
            running,
        )
        return pb.HeartbeatReply(
            kill=[convert.attempt_to_pb(k) for k in kills],
            reregister=any(isinstance(a, act.ReRegisterWorker) for a in out),
            finished_jobs=finished,
            epoch=self.driver.state.epoch,
        )

    @_guarded
    def RequestTask(
        self, request: pb.RequestTaskRequest, context: grpc.ServicerContext
    ) -> pb.RequestTaskReply:
        w = request.worker
        # Long poll: an idle worker's request waits (briefly) for work to appear, so
        # tasks start at once without workers polling the master in a tight loop.
        out, assigned = self.driver.request_tasks(
            w.worker_id,
            w.incarnation,
            min(request.free_slots, 1024),
            LONG_POLL_SECONDS,
            context.is_active,
        )
        reply = pb.RequestTaskReply(
            reregister=any(isinstance(a, act.ReRegisterWorker) for a in out)
        )
        specs: set[str] = set()
        for assignment in assigned:
            action, spec = assignment.action, assignment.spec
            ref = ev.AttemptRef(action.job_id, action.kind, action.index, action.attempt)
            task = pb.TaskAssignment(
                attempt=convert.attempt_to_pb(ref),
                skip=list(action.skip),
                num_maps=spec.num_maps,
                epoch=action.epoch,
            )
            if action.kind is TaskKind.MAP:
                task.split.CopyFrom(convert.split_to_pb(spec.splits[action.index]))
            reply.tasks.append(task)
            if action.job_id not in specs:
                specs.add(action.job_id)
                reply.jobs.append(self._spec_without_splits(spec))
        return reply

    def _spec_without_splits(self, spec: JobSpec) -> pb.JobSpec:
        """The job's spec for workers (code, settings; splits go with each map task)."""
        message = self._specs.get(spec.job_id)
        if message is None:
            message = convert.job_to_pb(spec.replace(splits=()))
            self._specs[spec.job_id] = message
        return message

    def _attempt(self, message: pb.AttemptId) -> ev.AttemptRef:
        """The attempt a request names; INVALID_ARGUMENT if its job has no such task or
        attempt (an unknown job is let through: the core ignores stale reports)."""
        ref = convert.attempt_from_pb(message)
        with self.driver.lock:
            problem = queries.attempt_problem(self.driver.state, ref)
        if problem:
            raise convert.BadMessage(problem)
        return ref

    def _log(self, worker: pb.WorkerIdentity, ref: ev.AttemptRef, text: str) -> str:
        """The end of a report's log, kept only for an attempt that runs on that worker
        (so no request can make the master store logs of attempts that never ran)."""
        if not text:
            return ""
        with self.driver.lock:
            runs = queries.runs_on(self.driver.state, worker.worker_id, worker.incarnation, ref)
        return text[-MAX_LOG_CHARS:] if runs else ""

    def _succeeded(
        self,
        request: pb.ReportMapDoneRequest | pb.ReportReduceDoneRequest,
        event_type: type[ev.MapTaskSucceeded] | type[ev.ReduceTaskSucceeded],
    ) -> pb.Ack:
        ref = self._attempt(request.attempt)
        w = request.worker
        event = event_type(
            self._now(), w.worker_id, w.incarnation, ref, convert.stats_from_pb(request.stats)
        )
        self.driver.report(event, self._log(w, ref, request.log))
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
        ref = self._attempt(request.attempt)
        w = request.worker
        out = self.driver.handle(
            ev.ReduceCommitRequested(self._now(), w.worker_id, w.incarnation, ref)
        )
        grants = [a for a in out if isinstance(a, act.GrantCommit)]
        return pb.RequestCommitReply(granted=bool(grants), epoch=grants[0].epoch if grants else 0)

    @_guarded
    def ReportReduceDone(
        self, request: pb.ReportReduceDoneRequest, context: grpc.ServicerContext
    ) -> pb.Ack:
        ack = self._succeeded(request, ev.ReduceTaskSucceeded)
        self.driver.observe_fetches(request.fetch_seconds)  # /metrics only: not an event
        return ack

    @_guarded
    def ReportTaskFailed(
        self, request: pb.ReportTaskFailedRequest, context: grpc.ServicerContext
    ) -> pb.Ack:
        ref = self._attempt(request.attempt)
        w = request.worker
        self.driver.report(
            ev.TaskFailed(
                self._now(),
                w.worker_id,
                w.incarnation,
                ref,
                request.reason[:MAX_REASON],
                request.record[:MAX_REASON],
                request.traceback[-MAX_TRACEBACK:],
                infrastructure=request.infrastructure,
                label=request.record_label[:MAX_REASON],
            ),
            self._log(w, ref, request.log),
        )
        return pb.Ack()

    @_guarded
    def ReportFetchFailed(
        self, request: pb.ReportFetchFailedRequest, context: grpc.ServicerContext
    ) -> pb.Ack:
        ref = self._attempt(request.reduce_attempt)
        with self.driver.lock:
            problem = queries.map_output_problem(
                self.driver.state, ref.job_id, request.map_index, request.map_attempt
            )
        if problem:
            raise convert.BadMessage(problem)
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
        ref = self._attempt(request.reduce_attempt)
        driver = self.driver

        def alive() -> bool:
            return driver.state.attempt_running(ref) and driver.state.is_current(
                request.worker.worker_id, request.worker.incarnation
            )

        def news() -> bool:
            return queries.output_log_length(driver.state, ref.job_id) > request.since

        with driver.lock:
            # A reducer with nothing to fetch waits for map outputs: hold its call until
            # one comes (or the attempt ends).
            driver.hold_until(
                lambda: news() or not alive(), _held_seconds(request.wait), context.is_active
            )
            state = driver.state
            entries = queries.map_outputs_since(state, ref.job_id, request.since)
            return pb.GetMapOutputsReply(
                outputs=[
                    pb.MapOutputLocation(
                        map_index=e.index,
                        map_attempt=e.attempt,
                        address=e.address,
                        retracted=e.retracted,
                    )
                    for e in entries
                ],
                attempt_alive=alive(),
                next=queries.output_log_length(state, ref.job_id),
            )

    @_guarded
    def SubmitJob(
        self, request: pb.SubmitJobRequest, context: grpc.ServicerContext
    ) -> pb.SubmitJobReply:
        spec = convert.job_from_pb(request.spec)
        config = self.driver.config
        if spec.num_maps > config.max_maps:
            raise convert.BadMessage(
                f"the job has {spec.num_maps} map tasks (input splits); this master accepts "
                f"at most {config.max_maps} (mapreduce master --max-maps; a larger "
                "--split-size makes fewer)"
            )
        if spec.num_reducers > config.max_reducers:
            raise convert.BadMessage(
                f"the job has {spec.num_reducers} reduce tasks; this master accepts at most "
                f"{config.max_reducers} (mapreduce master --max-reducers)"
            )
        try:
            out = self.driver.submit(spec)
        except (MapReduceError, OSError) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        for action in out:
            if isinstance(action, act.RefuseJob):
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, action.reason)
        return pb.SubmitJobReply(job_id=spec.job_id)

    def _job_status(self, job_id: str) -> pb.JobStatus:
        """A job's status (call with the driver's lock held).  Raises KeyError."""
        state = self.driver.state
        brief = queries.job_brief(state, job_id, self._now())
        job = state.jobs[job_id]
        summary = queries.finished_summary(state, job_id)
        last = queries.failing_attempt(state, job_id)
        failure = None
        if last is not None:
            failure = pb.AttemptFailure(
                task=last.task,
                attempt=last.attempt,
                worker=last.worker,
                record=last.label or last.record,
                reason=last.reason,
                traceback=last.traceback,
            )
        return pb.JobStatus(
            job_id=job_id,
            state=brief.state,
            reason=brief.reason,
            maps_total=brief.maps.total,
            maps_done=brief.maps.completed,
            reduces_total=brief.reduces.total,
            reduces_done=brief.reduces.completed,
            failed_attempts=brief.failed_attempts,
            summary_json=json.dumps(summary, sort_keys=True) if summary else "",
            failures=[f.line() for f in job.failures],
            elapsed_seconds=brief.elapsed_seconds,
            input_bytes_done=brief.input_bytes_done,
            input_bytes_total=brief.input_bytes_total,
            map_attempts=sum(len(t.attempts) for t in job.maps),
            reduce_attempts=sum(len(t.attempts) for t in job.reduces),
            failure=failure,
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

    def GetClusterStatus(
        self, request: pb.GetClusterStatusRequest, context: grpc.ServicerContext
    ) -> pb.ClusterStatus:
        """Answered by every candidate: a follower says it is one and where the leader is."""
        if not self.driver.serving.is_set():
            return pb.ClusterStatus(
                role=self.driver.role(), leader=self.driver.journal.leader_address()
            )
        with self.driver.lock:
            snapshot = queries.cluster(self.driver.state, self.driver.liveness, self._now())
            workers = [
                pb.WorkerStatus(
                    worker_id=w.id,
                    address=w.address,
                    slots=w.slots,
                    running=len(w.running),
                    last_heartbeat_age=w.last_heartbeat_seconds,
                    paused=w.reason,
                )
                for w in snapshot.workers
                if w.state == "alive"
            ]
            jobs = [self._job_status(job.id) for job in snapshot.jobs]
        return pb.ClusterStatus(
            workers=workers,
            jobs=jobs,
            epoch=snapshot.epoch,
            role=self.driver.role(),
            leader=self.driver.journal.leader_address(),
        )

    @_guarded
    def GetTaskLogs(
        self, request: pb.GetTaskLogsRequest, context: grpc.ServicerContext
    ) -> pb.TaskLogs:
        try:
            kind, index = queries.parse_task_id(request.task)
        except KeyError:
            raise convert.BadMessage(
                f"{request.task[:100]!r} is not a task id such as map-00003 or reduce-00001"
            ) from None
        with self.driver.lock:
            job = self.driver.state.jobs.get(request.job_id)
            if job is not None and index >= len(job.tasks(kind)):
                raise convert.BadMessage(
                    f"job {request.job_id} has {len(job.tasks(kind))} {kind.value} tasks: "
                    f"no {request.task}"
                )
            attempts = queries.task_logs(
                self.driver.state, request.job_id, request.task, self.driver.logs.get
            )
        return pb.TaskLogs(
            attempts=[
                pb.AttemptLog(
                    attempt=a.attempt, worker=a.worker, state=a.state, log=a.log, error=a.error
                )
                for a in attempts
            ]
        )


def serve_master(
    listen: str,
    driver: MasterDriver,
    max_workers: int = 128,
    security: Security | None = None,
) -> tuple[grpc.Server, int]:
    """Serve on ``listen`` (port 0: any); return the server and its port.

    A single master recovers its state before this returns.  A replicated one
    (a master candidate) answers at once, as a follower, and a background thread
    waits for it to lead, then recovers and serves.  Its ``grpc.health.v1`` status
    is SERVING from then until the driver stops.
    """
    health = Health([pb.DESCRIPTOR.services_by_name["Master"].full_name])
    server, port = convert.start_grpc_server(
        listen,
        lambda server: pb_grpc.add_MasterServicer_to_server(MasterService(driver), server),
        max_workers,
        "master-rpc",
        security,
        health,
    )
    driver.on_stop.append(lambda: health.set_serving(False))

    def lead() -> None:
        driver.lead()
        if not driver.stopped:
            health.set_serving(True)

    if driver.journal.replicated:
        threading.Thread(target=lead, name="master-lead", daemon=True).start()
    else:
        lead()
    driver.start()
    return server, port
