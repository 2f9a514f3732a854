"""The ``mapreduce`` command.

Exit status: 0 on success, 1 when a job fails, 2 for a usage error (a bad
flag, job file, input or output), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from mapreduce import __version__, daemonlog, options
from mapreduce.core.spec import DEFAULT_MAX_MAPS, DEFAULT_MAX_REDUCERS, MAX_REDUCERS, MAX_SPLITS
from mapreduce.errors import JobFailedError, MapReduceError, MasterUnreachable, UsageError
from mapreduce.options import read_secret
from mapreduce.options import security_of as _security
from mapreduce.summary import render_summary

# The cluster modules (gRPC among them) are imported by the commands that need
# them, so that `run --local` starts fast.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc starts: no INFO noise


def _add_job_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB.py", help="the job file")
    parser.add_argument(
        "--input",
        "-i",
        action="append",
        nargs="+",
        required=True,
        metavar="PATH",
        help="input files, directories (read recursively; names starting with _ or . are "
        "skipped) or glob patterns, as paths or URLs (s3://bucket/prefix, gs://, az://, "
        "file://); repeatable",
    )
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="DIR",
        help="output directory or URL (s3://bucket/prefix...); must not exist unless --overwrite",
    )
    options.add_options(parser, [options.JOB])


def _add_run_arguments(run: argparse.ArgumentParser) -> None:
    _add_job_flags(run)
    options.add_options(run, [options.RUN, options.SECURITY])


def _add_master_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master",
        required=True,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the master, or every master candidate (the leader is followed)",
    )


def _add_secret_flag(parser: argparse.ArgumentParser) -> None:
    options.add_options(parser, [options.SECURITY])


def _add_tls_flags(parser: argparse.ArgumentParser) -> None:
    for keyword in ("tls_cert", "tls_key", "tls_ca"):
        options.BY_KEYWORD[keyword].add_to(parser)


def _add_log_format_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=daemonlog.FORMATS,
        default=os.environ.get("MAPREDUCE_LOG_FORMAT", "text"),
        help="text (default), or json: every line one JSON object with time, level, "
        "component, job, task, attempt and message, for log shippers ($MAPREDUCE_LOG_FORMAT)",
    )


def _add_master_arguments(master: argparse.ArgumentParser) -> None:
    master.add_argument(
        "--listen",
        default="127.0.0.1:7070",
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:7070)",
    )
    master.add_argument(
        "--http-port",
        type=int,
        default=7071,
        metavar="PORT",
        help="port of the status web page, on the --listen host (default 7071; 0: any)",
    )
    master.add_argument("--no-http", action="store_true", help="serve no status web page")
    _add_log_format_flag(master)
    master.add_argument(
        "--raft",
        default="",
        metavar="HOST:PORT",
        help="with --peers: this master candidate's Raft address (candidates replicate the "
        "master's journal and elect a leader; only the leader serves)",
    )
    master.add_argument(
        "--peers",
        default="",
        metavar="HOST:PORT,...",
        help="the other master candidates' Raft addresses (2 for 3 candidates, 4 for 5); "
        "needs --raft, --state-dir and --secret-file",
    )
    master.add_argument(
        "--secret-file",
        default=os.environ.get("MAPREDUCE_SECRET_FILE", ""),
        metavar="FILE",
        help="the cluster secret (mapreduce secret FILE makes one); default "
        "$MAPREDUCE_SECRET_FILE. Mandatory with --peers: it authenticates and encrypts the "
        "candidates' Raft traffic",
    )
    _add_tls_flags(master)
    master.add_argument(
        "--state-dir",
        default="",
        metavar="DIR",
        help="keep the master's state in DIR (a journal with checkpoints): a master started "
        "again with the same DIR resumes its jobs. Without it the state lives in memory only "
        "and a restarted master knows no jobs",
    )
    master.add_argument(
        "--worker-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="declare a worker dead after this long without a heartbeat",
    )
    master.add_argument(
        "--task-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="fail an attempt that makes no progress for this long",
    )
    master.add_argument(
        "--backup-after",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="start backup attempts only for attempts older than this",
    )
    master.add_argument(
        "--max-maps",
        type=int,
        default=DEFAULT_MAX_MAPS,
        metavar="M",
        help=f"refuse jobs with more map tasks (input splits) than this (default "
        f"{DEFAULT_MAX_MAPS}; at most {MAX_SPLITS})",
    )
    master.add_argument(
        "--max-reducers",
        type=int,
        default=DEFAULT_MAX_REDUCERS,
        metavar="R",
        help=f"refuse jobs with more reduce tasks than this (default {DEFAULT_MAX_REDUCERS}; "
        f"at most {MAX_REDUCERS})",
    )


def _add_worker_arguments(worker: argparse.ArgumentParser) -> None:
    _add_secret_flag(worker)
    _add_master_flag(worker)
    worker.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="address of this worker's shuffle service (default 127.0.0.1, any port)",
    )
    worker.add_argument(
        "--workdir",
        default="",
        metavar="DIR",
        help="local directory for map output and task logs (default: a temporary one, "
        "removed when the worker stops)",
    )
    worker.add_argument(
        "--slots",
        type=int,
        default=1,
        metavar="N",
        help="map tasks run at once, and as many reduce tasks (default 1)",
    )
    worker.add_argument(
        "--fail-after",
        type=int,
        default=0,
        metavar="N",
        help="fault injection: exit abruptly after N finished tasks",
    )
    worker.add_argument(
        "--shuffle-idle-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="end a map-output fetch whose client reads nothing for this long, so stalled "
        "readers cannot hold the shuffle service (default 30)",
    )
    worker.add_argument("--name", default="", help="worker id (default: its address)")
    _add_log_format_flag(worker)
    # set by the embedded cluster of run --chaos, for its own workers
    worker.add_argument("--chaos", default="", help=argparse.SUPPRESS)
    worker.add_argument("--chaos-seed", type=int, default=0, help=argparse.SUPPRESS)
    worker.add_argument("--chaos-record", default="", help=argparse.SUPPRESS)
    worker.add_argument("--chaos-slow", action="store_true", help=argparse.SUPPRESS)
    worker.add_argument(
        "--advertise",
        default="",
        metavar="HOST",
        help="host name other workers reach this one at (default: the --listen host, or "
        "this machine's host name when listening on 0.0.0.0)",
    )


def _add_submit_arguments(submit: argparse.ArgumentParser) -> None:
    _add_secret_flag(submit)
    _add_job_flags(submit)
    _add_master_flag(submit)
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow the job until it ends; exit 0 only if it succeeded",
    )


def _add_secret_arguments(secret: argparse.ArgumentParser) -> None:
    secret.add_argument("file", metavar="FILE")


def _add_certs_arguments(certs: argparse.ArgumentParser) -> None:
    certs.add_argument("directory", metavar="DIR", help="where ca.pem, cert.pem, key.pem go")
    certs.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name or IP address clients reach a server by (repeatable; "
        "default: localhost and 127.0.0.1)",
    )
    certs.add_argument(
        "--days", type=int, default=365, help="how long the certificates are valid (default 365)"
    )


def _add_status_arguments(status: argparse.ArgumentParser) -> None:
    _add_secret_flag(status)
    _add_master_flag(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--job", metavar="JOB_ID", help="show one job and its summary")


def _add_cancel_arguments(cancel: argparse.ArgumentParser) -> None:
    _add_secret_flag(cancel)
    cancel.add_argument("job", metavar="JOB_ID")
    _add_master_flag(cancel)


def _add_health_arguments(health: argparse.ArgumentParser) -> None:
    health.add_argument("address", metavar="HOST:PORT")
    health.add_argument(
        "--service",
        default="",
        help="the service to ask about: mapreduce.v1.Master or mapreduce.v1.Shuffle "
        "(default: the server as a whole)",
    )
    health.add_argument(
        "--live",
        action="store_true",
        help="succeed whenever the server answers, SERVING or not (a master candidate that "
        "follows is alive, not serving): for liveness checks",
    )
    health.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="default 5")
    _add_tls_flags(health)


def _add_logs_arguments(logs: argparse.ArgumentParser) -> None:
    _add_secret_flag(logs)
    logs.add_argument("job", metavar="JOB_ID")
    logs.add_argument("task", metavar="TASK", help="map-00003 or reduce-00001")
    _add_master_flag(logs)


#: Each command of ``mapreduce``: its help, its description (None: its help), and what adds
#: its arguments to its parser.
_COMMANDS: dict[str, tuple[str, str | None, Callable[[argparse.ArgumentParser], None]]] = {
    "run": (
        "run a job (on an embedded cluster, or --local)",
        "Run the MapReduce job defined in JOB (a Python file with map and reduce) on an "
        "embedded cluster of --workers worker processes, or sequentially with --local.",
        _add_run_arguments,
    ),
    "master": ("run a master daemon", None, _add_master_arguments),
    "worker": ("run a worker daemon", None, _add_worker_arguments),
    "submit": ("submit a job to a running master", None, _add_submit_arguments),
    "secret": (
        "write a new random cluster secret to FILE (mode 0600)",
        None,
        _add_secret_arguments,
    ),
    "certs": (
        "write a private CA and one certificate for the cluster's hosts (for --tls-*)",
        None,
        _add_certs_arguments,
    ),
    "status": ("show the workers and jobs of a master", None, _add_status_arguments),
    "cancel": ("cancel a queued or running job", None, _add_cancel_arguments),
    "health": (
        "check a master's or worker's gRPC health (grpc.health.v1), for health checks",
        "Ask the standard gRPC health service of a master or a worker's shuffle server for its "
        "status, as grpc_health_probe does (no secret needed). Exit 0 when it is SERVING (with "
        "--live: when it answers at all), else 1.",
        _add_health_arguments,
    ),
    "logs": (
        "print the logs and errors of every attempt of a task",
        None,
        _add_logs_arguments,
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``mapreduce``'s command line.  With ``command``, only that command's
    arguments are added (the others are only listed, for the choices and ``--help``): a
    parser for ``mapreduce COMMAND ...`` made in a fraction of the time (about 2 ms less)."""
    parser = argparse.ArgumentParser(
        prog="mapreduce",
        description="MapReduce (Dean & Ghemawat, OSDI 2004) in Python.",
    )
    parser.add_argument("--version", action="version", version=f"mapreduce {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (about, description, add_arguments) in _COMMANDS.items():
        subparser = subparsers.add_parser(name, help=about, description=description)
        if command is None or command == name:
            add_arguments(subparser)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    # On the embedded cluster, no collections until its master serves: the imports until
    # then (gRPC, protobuf, the cluster's modules) make tens of thousands of objects that
    # live as long as the process, and collections during them only traverse those again
    # (about a tenth of the imports' time).  The cluster freezes them before it forks its
    # workers and collects again once its master serves (see EmbeddedCluster).
    if not (args.local or args.master):
        gc.disable()
    try:
        from mapreduce import api

        signal.signal(signal.SIGTERM, _interrupt)  # stop the cluster as on Ctrl-C
        api.execute(args, fork=True)  # fork: nothing here has used gRPC yet
    finally:
        gc.enable()
    return 0


def _master(args: argparse.Namespace) -> int:
    from mapreduce.core.config import MasterConfig
    from mapreduce.master.driver import MasterDriver
    from mapreduce.master.journal import FileJournal, JournalCorruptError
    from mapreduce.master.logs import LogStore
    from mapreduce.master.service import serve_master
    from mapreduce.web.server import StatusServer

    daemonlog.configure(args.log_format)
    try:
        config = MasterConfig(
            worker_timeout=args.worker_timeout,
            task_timeout=args.task_timeout,
            backup_after=args.backup_after,
            max_maps=args.max_maps,
            max_reducers=args.max_reducers,
        )
        config.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    security = _security(args)  # the secret and TLS files, read once
    _refuse_open_binding(args.listen, security)
    if args.peers or args.raft:
        driver = MasterDriver(
            config,
            journal=_raft_journal(args),
            logs=LogStore(os.path.join(os.path.abspath(args.state_dir), "logs")),
        )
    elif args.state_dir:
        state_dir = os.path.abspath(args.state_dir)
        driver = MasterDriver(
            config,
            journal=FileJournal(os.path.join(state_dir, "journal")),
            logs=LogStore(os.path.join(state_dir, "logs")),
        )
    else:
        driver = MasterDriver(config)
    try:
        server, port = serve_master(args.listen, driver, security=security)
    except JournalCorruptError as exc:
        raise UsageError(f"--state-dir {args.state_dir}: {exc}") from None
    for message in driver.recovery_messages:
        logging.getLogger("mapreduce.master").warning("journal repaired: %s", message)

    def say(message: str) -> None:
        daemonlog.say(args.log_format, "master", message)

    host = args.listen.rsplit(":", 1)[0]
    with driver.lock:
        epoch, known = driver.state.epoch, len(driver.state.jobs)
    if driver.journal.replicated:
        say(f"master candidate, Raft on {args.raft}, peers {args.peers}")
    elif args.state_dir:
        say(f"state in {args.state_dir}: epoch {epoch}, {known} jobs known")
    say(f"master listening on {host}:{port}")
    secret = security.secret
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    status = (
        None if args.no_http else StatusServer(driver, host, args.http_port, secret, tls).start()
    )
    if status is not None:
        say(f"status page: {status.url}")
    try:
        server.wait_for_termination()
    finally:
        driver.stop()
        server.stop(grace=None)
        if status is not None:
            status.stop()
    return 0


def _refuse_open_binding(listen: str, security: Any, flag: str = "--listen") -> None:
    """Serving anything but loopback needs the cluster secret (else anyone reaching it runs code).

    Raises:
        UsageError: ``listen`` is not a loopback address and there is no secret.
    """
    host = listen.rpartition(":")[0].strip("[]")
    if security.secret or host == "localhost" or host == "::1" or host.startswith("127."):
        return
    raise UsageError(
        f"refusing to serve on {listen} ({flag}) without the cluster secret: anyone who can "
        "reach it could run code on every worker. Make one with `mapreduce secret FILE` and "
        "give it to every process with --secret-file FILE (or $MAPREDUCE_SECRET_FILE), or "
        "listen on 127.0.0.1"
    )


def _raft_journal(args: argparse.Namespace) -> Any:
    """The replicated journal of a master candidate, from --raft, --peers and --secret-file."""
    if not (args.raft and args.peers):
        raise UsageError("a master candidate needs both --raft HOST:PORT and --peers")
    if not args.secret_file:
        raise UsageError(
            "--peers needs --secret-file: the candidates' Raft traffic is pickle, and without "
            "the secret anyone who reaches the Raft port runs code"
        )
    if not args.state_dir:
        raise UsageError("--peers needs --state-dir (the candidate's replicated journal)")
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        raise UsageError("a master candidate needs a fixed --listen port (workers follow it)")
    if host in ("", "0.0.0.0", "::", "[::]"):
        import socket

        host = socket.gethostname()
    secret = read_secret(args.secret_file)
    from mapreduce.master.raft import RaftJournal

    return RaftJournal(
        args.raft,
        [p.strip() for p in args.peers.split(",") if p.strip()],
        secret,
        os.path.join(os.path.abspath(args.state_dir), "raft"),
        f"{host}:{port}",
        on_deposed=_restart_process,
    )


def _restart_process() -> None:
    """A deposed leader starts afresh as a follower: its state may hold uncommitted decisions."""
    logging.getLogger("mapreduce.master").warning("no longer the leader: restarting as a follower")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _injector(args: argparse.Namespace) -> Any:
    """The fault injector of a worker of run --chaos, or None."""
    if not args.chaos:
        return None
    from mapreduce.chaos import Injector, parse_chaos

    return Injector(parse_chaos(args.chaos), args.chaos_seed, args.chaos_record, args.chaos_slow)


def _secret(args: argparse.Namespace) -> int:
    import secrets

    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot create {args.file}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    print(f"wrote a new cluster secret to {args.file} (mode 0600)")
    return 0


def _certs(args: argparse.Namespace) -> int:
    from mapreduce.rpc import certificates as c

    hosts = args.host or ["localhost", "127.0.0.1"]
    try:
        out = c.write_certificates(args.directory, hosts, args.days)
    except (OSError, ValueError) as exc:
        raise UsageError(f"mapreduce certs: {exc}") from None
    print(f"wrote {out / c.CA_CERT}, {out / c.CERT} and {out / c.KEY} (for {', '.join(hosts)})")
    print(
        f"use: --tls-ca {out / c.CA_CERT} --tls-cert {out / c.CERT} --tls-key {out / c.KEY}"
        f" (keep {out / c.CA_KEY} offline: it signs certificates)"
    )
    return 0


def _worker(args: argparse.Namespace, master_from: Callable[[], str] | None = None) -> int:
    from mapreduce.worker.executor import start_fork_server

    # Forked now, with the task runners imported and no thread, gRPC object or logging
    # configuration yet: the task processes are forked from it.
    start_fork_server()
    from mapreduce.worker.agent import Worker, WorkerConfig

    daemonlog.configure(args.log_format)
    if args.slots < 1:
        raise UsageError(f"--slots must be at least 1 (got {args.slots})")
    security = _security(args)  # the secret and TLS files, read once
    _refuse_open_binding(args.listen, security)
    if args.shuffle_idle_timeout <= 0:
        raise UsageError(
            f"--shuffle-idle-timeout must be positive (got {args.shuffle_idle_timeout})"
        )
    worker = Worker(
        WorkerConfig(
            master=args.master,
            listen=args.listen,
            workdir=args.workdir,
            slots=args.slots,
            fail_after=args.fail_after,
            name=args.name,
            advertise=args.advertise,
            secret=security.secret,
            security=security,
            shuffle_idle_timeout=args.shuffle_idle_timeout,
            chaos=_injector(args),
            master_from=master_from,
        )
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()
    return 0


def _submit(args: argparse.Namespace) -> int:
    from mapreduce import api, client

    request = client.build_submission(options.job_options(args))
    stub = client.connect(args.master, _security(args))
    job_id = client.submit(stub, request)
    print(job_id, flush=True)
    if args.wait:
        api.follow(stub, job_id, args.quiet)
    return 0


def _status(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from mapreduce import client, progress
    from mapreduce.rpc._generated import mapreduce_pb2 as pb

    stub = client.connect(args.master, _security(args))
    if args.job:
        job = client.call(stub.GetJobStatus, pb.GetJobStatusRequest(job_id=args.job))
        if args.json:
            print(json_format.MessageToJson(job))
            return 0
        print(progress.status_line(job) + (f" ({job.reason})" if job.reason else ""))
        for failure in job.failures:
            print(f"  attempt failed: {failure}")
        if job.summary_json:
            print(render_summary(json.loads(job.summary_json)))
        return 0
    status = client.call(stub.GetClusterStatus, pb.GetClusterStatusRequest())
    if args.json:
        print(json_format.MessageToJson(status))
        return 0
    if status.role == "follower":
        leader = status.leader or "not elected yet"
        print(f"this master candidate is a follower; the leader: {leader}")
        return 0
    print(f"master epoch {status.epoch}; {len(status.workers)} workers")
    for w in status.workers:
        print(
            f"  {w.worker_id}  {w.address}  running {w.running} tasks ({w.slots} slots)  "
            f"last heartbeat {w.last_heartbeat_age:.1f}s ago"
            + (f"  paused: {w.paused}" if w.paused else "")
        )
    print(f"{len(status.jobs)} jobs")
    for job in status.jobs:
        print("  " + progress.status_line(job) + (f" ({job.reason})" if job.reason else ""))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from mapreduce import client
    from mapreduce.rpc._generated import mapreduce_pb2 as pb

    stub = client.connect(args.master, _security(args))
    client.call(stub.CancelJob, pb.CancelJobRequest(job_id=args.job))
    print(f"{args.job} cancelled")
    return 0


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2

    from mapreduce.rpc.security import Security

    tls = _security(argparse.Namespace(secret_file="", **vars(args)))
    channel = Security(cert=tls.cert, key=tls.key, ca=tls.ca).channel(args.address, [])
    try:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        reply = check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"{args.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if args.live or reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _logs(args: argparse.Namespace) -> int:
    from mapreduce import client
    from mapreduce.rpc._generated import mapreduce_pb2 as pb

    stub = client.connect(args.master, _security(args))
    logs = client.call(stub.GetTaskLogs, pb.GetTaskLogsRequest(job_id=args.job, task=args.task))
    for attempt in logs.attempts:
        print(f"== {args.task} attempt {attempt.attempt} on {attempt.worker}: {attempt.state}")
        if attempt.log:
            print(attempt.log.rstrip("\n"))
        if attempt.error:
            print(attempt.error.rstrip("\n"))
    if not logs.attempts:
        print(f"{args.task} has not run yet")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mapreduce`` command; returns the exit status.

    Without ``argv`` (the command line of this process, which exits next) the objects
    left are frozen on the way out (:func:`gc.freeze`): the interpreter's teardown then
    spares itself collecting them (about 0.03 s with gRPC loaded).  A ``run`` then ends
    the process at once (see :func:`_exit_now`).
    """
    try:
        command, code = _main(argv)
    finally:
        if argv is None:
            gc.freeze()
    if argv is None and command == "run":
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """End this process with ``code`` as its exit would, but without the interpreter's
    teardown of every module and object (0.01 s of CPU with gRPC loaded, all of it after
    the job's end).  The exit functions run (logging flushes its handlers, temporary
    files are removed) and the standard streams are flushed; threads still running are
    not waited for (once ``run`` is done, only idle gRPC server threads are left).
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code)


def run_worker(argv: Sequence[str], master_from: Callable[[], str]) -> int:
    """Run ``mapreduce ARGV``, a ``worker`` command line whose ``--master`` is empty: known
    only later, ``master_from()`` gives it once the worker's own services run.  Returns
    the exit status.  (The embedded cluster's forked workers start up while their master
    does.)"""
    args = build_parser("worker").parse_args(argv)
    if args.command != "worker":
        raise ValueError(f"not a worker command line: {argv}")
    return _command(lambda: _worker(args, master_from))


def _main(argv: Sequence[str] | None) -> tuple[str, int]:
    """The command's name and its exit status."""
    words = sys.argv[1:] if argv is None else argv
    # Only the command's own arguments (when the first word names a command: not --help).
    parser = build_parser(words[0] if words and words[0] in _COMMANDS else None)
    args = parser.parse_args(argv)
    commands = {
        "run": _run,
        "master": _master,
        "worker": _worker,
        "submit": _submit,
        "status": _status,
        "logs": _logs,
        "cancel": _cancel,
        "secret": _secret,
        "certs": _certs,
        "health": _health,
    }
    return args.command, _command(lambda: commands[args.command](args))


def _command(command: Callable[[], int]) -> int:
    """Run a command; return its exit status (errors are printed, see the module's docstring)."""
    try:
        return command()
    except (JobFailedError, MasterUnreachable) as exc:
        print(f"mapreduce: {exc}", file=sys.stderr)
        return 1
    except MapReduceError as exc:
        print(f"mapreduce: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mapreduce: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as cat does
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        grpc = sys.modules.get("grpc")
        if grpc is not None and isinstance(exc, grpc.RpcError):
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                print(f"mapreduce: cannot reach the master: {exc.details()}", file=sys.stderr)
            else:
                print(f"mapreduce: the master says {code.name}: {exc.details()}", file=sys.stderr)
            return 1
        raise
