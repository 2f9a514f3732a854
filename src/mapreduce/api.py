"""The Python API: :func:`run` a job and read its output back, from scripts and notebooks.

``mapreduce run`` and :func:`run` are one thing: the command parses its flags and
:func:`run` converts its keywords (both with the table in :mod:`mapreduce.options`)
into the same namespace, and both run it with :func:`execute`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mapreduce import options as opts
from mapreduce.dataflow import storage
from mapreduce.errors import OutputError, UsageError
from mapreduce.summary import render_summary


@dataclass(frozen=True)
class RunResult:
    """A job that succeeded.

    Attributes:
        job_id: the job's id.
        output: the output directory (absolute), or URL.
        summary: the content of ``OUTPUT/_summary.json``: ``counters``, ``system`` (record
            and byte counts), ``phase_seconds``, ``skipped_records``...
        storage_options: the ``storage_options`` of an output URL (to read it back).
    """

    job_id: str
    output: str
    summary: dict[str, Any]
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def counters(self) -> dict[str, int]:
        """The user counters (``mapreduce.increment_counter``), summed over the job."""
        return dict(self.summary.get("counters") or {})

    def records(self) -> Iterator[tuple[Any, Any]]:
        """The output's ``(key, value)`` pairs, in partition and key order (see
        :func:`read_output`)."""
        return read_output(self.output, self.storage_options)


def run(
    job: Any,
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    reducers: int = 1,
    workers: int | None = None,
    local: bool = False,
    master: str | None = None,
    params: dict[str, Any] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> RunResult:
    """Run a MapReduce job and wait for it to end, as ``mapreduce run`` does.

    Args:
        job: a job file's path, an imported job module, or any object with ``map`` and
            ``reduce`` (and optionally ``combine``, ``partition``, ``setup``,
            ``INPUT_FORMAT``) attributes: functions defined in a notebook or a script are
            shipped to the workers by source (see the README, "Python API").
        inputs: input files, directories or glob patterns (one, or several).
        output: the output directory.
        reducers: R, the number of reduce tasks and of output files.
        workers: worker processes of the embedded cluster (None: one per core).
        local: run sequentially in this process instead.
        master: ``"host:port[,host:port...]"``: run on the master daemon (or candidates)
            there instead, with ``secret_file=`` and the ``tls_*=`` options if it needs them.
        params: values for ``mapreduce.params()`` (converted to strings).
        overwrite: replace an existing output directory once the job has succeeded.
        **options: any other option of ``mapreduce run``, by the name of its flag with
            ``_`` for ``-`` (``split_size="16M"``, ``max_attempts=2``, ``secret_file=...``);
            ``--no-combiner`` and ``--no-backup-tasks`` are ``use_combiner=False`` and
            ``backup_tasks=False``.  ``quiet=False`` shows the progress on stderr and the
            summary on stdout, as the command does.

    Returns:
        The job's id, counters and summary; ``records()`` reads its output.

    Raises:
        JobFailedError: the job failed; ``task``, ``record``, ``reason`` and ``traceback``
            say where and why.
        UsageError, JobDefinitionError, InputError, OutputExistsError: before any work.
        MasterUnreachable: ``master`` did not answer.
        TypeError: an unknown keyword.
    """
    keywords = dict(
        options,
        reducers=reducers,
        local=local,
        master=master or "",
        params=params or {},
        overwrite=overwrite,
    )
    if workers is not None:
        keywords["workers"] = workers
    scratch = tempfile.mkdtemp(prefix="mapreduce-job-")
    try:
        from mapreduce.shipping import job_files

        job_path, helpers = job_files(job, scratch)
        if isinstance(inputs, str | os.PathLike):
            inputs = [inputs]
        args = opts.namespace(job_path, [os.fspath(p) for p in inputs], os.fspath(output), keywords)
        args.py_files = [*args.py_files, *helpers]
        return execute(args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if scratch in sys.path:  # put there by the job's loading
            sys.path.remove(scratch)


def execute(args: argparse.Namespace, *, fork: bool = False) -> RunResult:
    """Run the job ``args`` describes (``mapreduce run``'s namespace) to its end.

    Args:
        fork: the embedded cluster's workers may be forked from this process (only when
            it has not used gRPC yet: the ``mapreduce`` command).
    """
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before gRPC starts: no INFO noise
    options = opts.job_options(args)
    if args.local and args.master:
        raise UsageError("--local and --master exclude each other")
    from mapreduce.chaos import parse_chaos

    chaos = parse_chaos(args.chaos)
    if chaos.active and (args.local or args.master):
        raise UsageError("--chaos runs on the embedded cluster only (not with --local or --master)")
    if chaos.slow_worker > args.workers:
        raise UsageError(f"--chaos slow-worker={chaos.slow_worker} is more than --workers")
    if args.master:
        from mapreduce import client

        request = client.build_submission(options)
        stub = client.connect(args.master, opts.security_of(args))
        job_id = client.submit(stub, request)
        return _result(follow(stub, job_id, args.quiet), options.storage_options)
    if args.local:
        from mapreduce.local import run_local

        summary = run_local(options).to_dict()
        if not args.quiet:
            print(render_summary(summary))
        return _result(summary, options.storage_options)
    if any("://" in path for path in (*options.inputs, options.output)):
        # before the workers' modules are imported: their task processes preload s3fs
        os.environ.setdefault("MAPREDUCE_PRELOAD_STORES", "1")
    from mapreduce import client
    from mapreduce.cluster import EmbeddedCluster
    from mapreduce.core.config import MasterConfig

    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1 (got {args.workers})")
    if args.task_timeout <= 0:
        raise UsageError(f"--task-timeout must be positive (got {args.task_timeout})")
    with EmbeddedCluster(
        args.workers,
        MasterConfig(task_timeout=args.task_timeout),
        fork=fork,
        chaos=chaos,
        chaos_seed=args.chaos_seed,
    ) as cluster:
        if args.http_port and not args.no_http:
            cluster.serve_status_page(args.http_port)  # a port given may be taken: fail first
        # planned while the workers start up
        request = client.build_submission(options)
        stub = cluster.local_stub()  # the master is in this process
        job_id = client.submit(stub, request)
        # On any free port (the default), the status page starts once the job is in: its
        # start (0.01 s) does not delay the first task.
        page = "off" if args.no_http else cluster.serve_status_page(args.http_port).login_url
        if not args.quiet:
            print(f"master: {cluster.address} (status page: {page})", file=sys.stderr, flush=True)
        if chaos.active and not args.quiet:
            print(
                f"chaos: injecting {chaos.text()} (seed {args.chaos_seed})",
                file=sys.stderr,
                flush=True,
            )
        driver = cluster.driver
        assert driver is not None

        def pause(seconds: float) -> None:
            # The master is here: the wait between polls ends as soon as the job does.
            driver.wait_for_end(job_id, seconds)

        summary = follow(stub, job_id, args.quiet, cluster.any_worker_alive, pause=pause)
        if chaos.active and not args.quiet:
            counts = cluster.chaos_counts()
            print(
                "  faults injected (--chaos): " + ", ".join(f"{k} {v}" for k, v in counts.items())
            )
    return _result(summary, options.storage_options)


def _result(summary: dict[str, Any], storage_options: dict[str, str]) -> RunResult:
    output = str(summary.get("output", ""))
    return RunResult(str(summary.get("job_id", "")), output, summary, dict(storage_options))


def follow(
    stub: Any,
    job_id: str,
    quiet: bool,
    workers_alive: Callable[[], bool] | None = None,
    every: float = 0.1,
    pause: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Follow a job with a progress display on stderr; print the summary on stdout.

    ``every`` is the polling interval; ``pause`` sleeps between polls (see
    :func:`client.wait_for`).
    """
    from mapreduce import client

    display = None
    if not quiet:
        from mapreduce import progress

        display = progress.display_for(sys.stderr)
    try:
        summary = client.wait_for(
            stub,
            job_id,
            on_status=display,
            every=every,
            workers_alive=workers_alive,
            pause=pause,
        )
    finally:
        if display is not None:
            display.close()
    if not quiet:
        print(render_summary(summary))
    return summary


def read_output(
    path: str | os.PathLike[str], storage_options: dict[str, str] | None = None
) -> Iterator[tuple[Any, Any]]:
    """The ``(key, value)`` pairs of a finished output directory, in partition and key order.
    ``path`` may be a URL (an output on a store: the parts its ``_SUCCESS`` manifest lists;
    ``storage_options`` as for :func:`run`).

    Each ``key<TAB>value`` line is decoded back to Python values: a field that is exactly
    how a number, ``true``/``false``/``null``, an array or an object is written (JSON)
    becomes that value, arrays in keys become tuples (keys are never lists); any other
    field is the string it is.  So a string that reads as JSON (``"42"``, ``"true"``) comes
    back as that value, and ``bytes`` as ``str``.

    Raises:
        OutputError: ``path`` has no ``_SUCCESS`` (not a finished output).
    """
    directory = os.fspath(path)
    if storage.is_url(directory):
        return _store_records(storage.normalize(directory), storage_options or {})
    if not os.path.isfile(os.path.join(directory, "_SUCCESS")):
        raise OutputError(f"{directory} is not a finished job's output (no _SUCCESS)")
    parts = sorted(n for n in os.listdir(directory) if n.startswith("part-"))
    return _records([os.path.join(directory, n) for n in parts])


def _records(paths: list[str]) -> Iterator[tuple[Any, Any]]:
    for part in paths:
        with open(part, encoding="utf-8", newline="\n") as f:
            for line in f:
                key, _tab, value = line.removesuffix("\n").partition("\t")
                yield _decode(key, key=True), _decode(value, key=False)


def _store_records(url: str, options: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    fs, root = storage.filesystem(url, options)
    manifest = storage.store_call(url, lambda: storage.read_manifest(fs, root), OutputError)
    if manifest is None:
        raise OutputError(f"{url} is not a finished job's output (no _SUCCESS manifest)")
    parts = [name for name, _size in storage.list_input(url, options)]
    return _store_lines(parts, options)


def _store_lines(parts: list[str], options: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    for part in parts:
        with io.TextIOWrapper(
            storage.open_input(part, options), encoding="utf-8", newline="\n"
        ) as f:
            for line in f:
                key, _tab, value = line.removesuffix("\n").partition("\t")
                yield _decode(key, key=True), _decode(value, key=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity: a word, not a number


def _decode(text: str, key: bool) -> Any:
    from mapreduce.dataflow.runner import format_field

    if not text or text[0] not in '-0123456789tfn[{"':
        return text
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text
    if isinstance(value, str) or format_field(value) != text:
        return text  # written as is (a string), not as JSON
    return _tuples(value) if key else value


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
