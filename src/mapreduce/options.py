"""The options of ``mapreduce run``: one table for the command line and for :func:`mapreduce.run`.

Each :class:`Option` is a flag of ``mapreduce run`` (``--split-size``) and a keyword of
``mapreduce.run()`` (``split_size=``): the command's argument parser is built from this
table, and the Python API checks and converts its keywords with the same table, into
the same :class:`argparse.Namespace` the parser produces.  Both then run the job with
one function (:func:`mapreduce.api.execute`), so the two cannot drift apart.

The job file, the inputs and the output are not in the table: they are the command's
``JOB.py``, ``--input`` and ``--output`` and ``run()``'s positional arguments.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mapreduce.dataflow.formats import INPUT_FORMATS
from mapreduce.errors import UsageError
from mapreduce.planning import DEFAULT_MEMORY_MB, DEFAULT_SPLIT_SIZE, JobOptions

if TYPE_CHECKING:
    from mapreduce.rpc.security import Security

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"64M"``, ``"64MiB"``, ``"1g"`` or ``"4096"`` as a number of bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 4096, 64K, 64M or 1G")
    unit = (match.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(match.group(1)) * _UNITS[unit]


def parse_param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--param {text!r} is not NAME=VALUE")
    return name, value


#: Which commands an option belongs to: ``job`` (run and submit), ``run`` (run only),
#: ``security`` (every command that talks to a cluster).
JOB, RUN, SECURITY = "job", "run", "security"


@dataclass(frozen=True)
class Option:
    """One option of ``mapreduce run``.

    Attributes:
        keyword: the keyword of ``mapreduce.run()``, which is also the parser's ``dest``.
        flags: the command-line flags (``--split-size``; a short one may follow).
        help: the ``--help`` text.
        default: the default, or a function returning it (read when used: environment
            variables).
        kind: ``value`` (a flag with a value), ``true`` (a flag that sets True), ``false``
            (a flag that sets False, such as ``--no-combiner``), ``list`` (``nargs="+"``)
            or ``pairs`` (``--param NAME=VALUE``, repeatable: a dict in Python).
        type: converts the flag's text; also applied to ``str`` values given in Python.
        group: :data:`JOB`, :data:`RUN` or :data:`SECURITY`.
        python_default: the default of ``mapreduce.run()`` when it differs from the command's.
    """

    keyword: str
    flags: tuple[str, ...]
    help: str
    default: Any = None
    kind: str = "value"
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    group: str = JOB
    python_default: Any = None

    def default_value(self, python: bool = False) -> Any:
        value = self.python_default if python and self.python_default is not None else self.default
        return value() if callable(value) else value

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add this option to a command's parser."""
        common: dict[str, Any] = {"dest": self.keyword, "help": self.help}
        if self.type is not None:
            common["type"] = self.type
        if self.kind == "true":
            parser.add_argument(*self.flags, action="store_true", **common)
        elif self.kind == "false":
            parser.add_argument(*self.flags, action="store_false", **common)
        elif self.kind == "list":
            parser.add_argument(*self.flags, nargs="+", default=[], metavar=self.metavar, **common)
        elif self.kind == "pairs":
            parser.add_argument(
                *self.flags,
                action="append",
                default=[],
                metavar=self.metavar,
                **common,
            )
        else:
            parser.add_argument(
                *self.flags,
                default=self.default_value(),
                metavar=self.metavar,
                choices=self.choices,
                **common,
            )

    def from_python(self, value: Any) -> Any:
        """A keyword's value as the parser would have stored it.

        Raises:
            UsageError: the value has the wrong type or is not one of the choices.
        """
        name = f"{self.keyword}="
        if value is None and self.kind in ("list", "pairs"):
            return []
        if self.kind in ("true", "false"):
            if not isinstance(value, bool):
                raise UsageError(f"{name} must be True or False (got {value!r})")
            return value
        if self.kind == "list":
            if isinstance(value, str | os.PathLike):
                return [os.fspath(value)]
            return [os.fspath(v) for v in value]
        if self.kind == "pairs":
            if not isinstance(value, Mapping):
                raise UsageError(f"{name} must be a dict of names to values (got {value!r})")
            return [(str(k), str(v)) for k, v in value.items()]
        if value is None:
            return self.default_value()
        if isinstance(value, str) and self.type is not None:
            try:
                value = self.type(value)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise UsageError(f"{name}{value!r}: {exc}") from None
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        expected = self.type if self.type in (int, float, str) else None
        if self.type is parse_size:
            expected = int
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            raise UsageError(f"{name} must be {expected.__name__} (got {value!r})")
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{name}{value!r} is not one of {', '.join(self.choices)}")
        return value


def parse_storage_option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value is never part of an error message: it may be a secret)."""
    key, sep, _value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--storage-option {key[:40]!r}...: expected KEY=VALUE")
    return key.strip(), _value


def _env(name: str) -> Callable[[], str]:
    return lambda: os.environ.get(name, "")


RUN_OPTIONS: tuple[Option, ...] = (
    Option(
        "reducers",
        ("--reducers", "-r"),
        "number of reduce tasks, hence of part-NNNNN files (default 1)",
        default=1,
        type=int,
        metavar="R",
    ),
    Option(
        "input_format",
        ("--input-format",),
        "how input is read; overrides the job file's INPUT_FORMAT (default: the job's, else lines)",
        choices=tuple(sorted(INPUT_FORMATS)),
        type=str,
    ),
    Option(
        "split_size",
        ("--split-size",),
        "largest byte range of a file one map task reads, e.g. 64M (default 64M)",
        default=DEFAULT_SPLIT_SIZE,
        type=parse_size,
        metavar="SIZE",
    ),
    Option(
        "memory_mb",
        ("--memory-mb",),
        "map output kept in memory before spilling sorted runs to disk "
        f"(default {DEFAULT_MEMORY_MB})",
        default=DEFAULT_MEMORY_MB,
        type=int,
        metavar="MB",
    ),
    Option(
        "params",
        ("--param", "-p"),
        "a parameter for job code, read with mapreduce.params(); repeatable",
        kind="pairs",
        type=parse_param,
        metavar="NAME=VALUE",
    ),
    Option(
        "overwrite",
        ("--overwrite",),
        "replace the output directory if it exists (only once the job has succeeded)",
        default=False,
        kind="true",
    ),
    Option(
        "skip_bad_records",
        ("--skip-bad-records",),
        "skip up to N records that fail to decode or make user code "
        "raise, instead of failing the job (default 0)",
        default=0,
        type=int,
        metavar="N",
    ),
    Option(
        "use_combiner",
        ("--no-combiner",),
        "do not run the job's combine function",
        default=True,
        kind="false",
    ),
    Option(
        "max_attempts",
        ("--max-attempts",),
        "distributed: attempts of a task before the job fails (default 4)",
        default=4,
        type=int,
        metavar="N",
    ),
    Option(
        "backup_tasks",
        ("--no-backup-tasks",),
        "distributed: never start backup attempts of straggling tasks",
        default=True,
        kind="false",
    ),
    Option(
        "py_files",
        ("--py-files",),
        "distributed: helper modules or package directories the job imports, shipped with it",
        kind="list",
        metavar="PATH",
    ),
    Option(
        "storage_options",
        ("--storage-option",),
        "an option of the store of URL inputs and outputs (for S3: endpoint_url, key, "
        "secret, anon=true...; the store's environment is used too); values are never "
        "shown; repeatable (mapreduce.run(): a dict)",
        kind="pairs",
        type=parse_storage_option,
        metavar="KEY=VALUE",
    ),
    Option(
        "quiet",
        ("--quiet", "-q"),
        "print no progress and no summary (mapreduce.run(): the default)",
        default=False,
        kind="true",
        python_default=True,
    ),
    Option(
        "local",
        ("--local",),
        "run sequentially in this process (the reference execution)",
        default=False,
        kind="true",
        group=RUN,
    ),
    Option(
        "chaos",
        ("--chaos",),
        "embedded cluster: inject faults to watch recovery work, e.g. "
        "kill-worker=0.1,drop-fetch=0.05,slow-worker=1,crash-task=0.02 (see the README)",
        default="",
        type=str,
        metavar="SPEC",
        group=RUN,
    ),
    Option(
        "chaos_seed",
        ("--chaos-seed",),
        "seed of the faults --chaos injects (default 0)",
        default=0,
        type=int,
        metavar="S",
        group=RUN,
    ),
    Option(
        "master",
        ("--master",),
        "run on running daemons instead (as submit --wait): the master, or every master candidate",
        default="",
        type=str,
        metavar="HOST:PORT[,HOST:PORT...]",
        group=RUN,
    ),
    Option(
        "workers",
        ("--workers", "-w"),
        "worker processes of the embedded cluster (default: the number of cores)",
        default=lambda: os.cpu_count() or 1,
        type=int,
        metavar="N",
        group=RUN,
    ),
    Option(
        "http_port",
        ("--http-port",),
        "embedded cluster: port of the status web page on 127.0.0.1 (default: any free "
        "port; its address is printed)",
        default=0,
        type=int,
        metavar="PORT",
        group=RUN,
    ),
    Option(
        "no_http",
        ("--no-http",),
        "embedded cluster: serve no status web page",
        default=False,
        kind="true",
        group=RUN,
    ),
    Option(
        "task_timeout",
        ("--task-timeout",),
        "embedded cluster: fail and retry an attempt that makes no progress for this long "
        "(default 600)",
        default=600.0,
        type=float,
        metavar="SECONDS",
        group=RUN,
    ),
    Option(
        "secret_file",
        ("--secret-file",),
        "the cluster secret every call carries (default $MAPREDUCE_SECRET_FILE)",
        default=_env("MAPREDUCE_SECRET_FILE"),
        type=str,
        metavar="FILE",
        group=SECURITY,
    ),
    Option(
        "tls_cert",
        ("--tls-cert",),
        "this process's TLS certificate: servers present it, and clients to servers "
        "that demand mutual TLS ($MAPREDUCE_TLS_CERT)",
        default=_env("MAPREDUCE_TLS_CERT"),
        type=str,
        metavar="PEM",
        group=SECURITY,
    ),
    Option(
        "tls_key",
        ("--tls-key",),
        "the private key of --tls-cert ($MAPREDUCE_TLS_KEY)",
        default=_env("MAPREDUCE_TLS_KEY"),
        type=str,
        metavar="PEM",
        group=SECURITY,
    ),
    Option(
        "tls_ca",
        ("--tls-ca",),
        "the CA that signed the cluster's certificates: clients verify servers with it, "
        "and a server given it demands client certificates (mutual TLS) ($MAPREDUCE_TLS_CA)",
        default=_env("MAPREDUCE_TLS_CA"),
        type=str,
        metavar="PEM",
        group=SECURITY,
    ),
)

BY_KEYWORD: dict[str, Option] = {option.keyword: option for option in RUN_OPTIONS}


def add_options(parser: argparse.ArgumentParser, groups: Iterable[str]) -> None:
    """Add the options of ``groups`` to a command's parser."""
    wanted = set(groups)
    for option in RUN_OPTIONS:
        if option.group in wanted:
            option.add_to(parser)


def namespace(
    job: str, inputs: Iterable[str], output: str, keywords: Mapping[str, Any]
) -> argparse.Namespace:
    """The namespace ``mapreduce run`` would parse, from ``mapreduce.run()``'s arguments.

    Raises:
        TypeError: an unknown keyword (as for any Python function).
        UsageError: a value of the wrong type.
    """
    unknown = sorted(set(keywords) - set(BY_KEYWORD))
    if unknown:
        raise TypeError(
            f"run() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"the options are: {', '.join(sorted(BY_KEYWORD))}"
        )
    values: dict[str, Any] = {}
    for option in RUN_OPTIONS:
        if option.keyword in keywords:
            values[option.keyword] = option.from_python(keywords[option.keyword])
        elif option.kind in ("list", "pairs"):
            values[option.keyword] = []
        else:
            values[option.keyword] = option.default_value(python=True)
    return argparse.Namespace(command="run", job=job, input=[list(inputs)], output=output, **values)


def job_options(args: argparse.Namespace) -> JobOptions:
    """The job's options in a ``run`` or ``submit`` namespace."""
    return JobOptions(
        job_path=args.job,
        inputs=tuple(path for group in args.input for path in group),
        output=args.output,
        num_reducers=args.reducers,
        input_format=args.input_format,
        split_size=args.split_size,
        memory_mb=args.memory_mb,
        params=dict(args.params),
        overwrite=args.overwrite,
        skip_bad_records=args.skip_bad_records,
        use_combiner=args.use_combiner,
        max_attempts=args.max_attempts,
        backup_tasks=args.backup_tasks,
        py_files=tuple(args.py_files),
        storage_options=dict(args.storage_options),
    )


def read_secret(path: str, flag: str = "--secret-file") -> bytes:
    """The cluster secret in ``path`` (surrounding whitespace stripped).

    Raises:
        UsageError: no such file, or it is empty.
    """
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror}") from None
    if len(secret) < 16:
        raise UsageError(f"{flag} {path}: the secret must be at least 16 bytes (mapreduce secret)")
    return secret


def security_of(args: argparse.Namespace) -> Security:
    """The cluster secret (--secret-file) and TLS files (--tls-cert, --tls-key, --tls-ca).

    Raises:
        UsageError: a file cannot be read, or a certificate comes without its key.
    """
    from mapreduce.rpc.security import Security

    def read(flag: str, path: str) -> bytes:
        if not path:
            return b""
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError(f"{flag} {path}: {exc.strerror}") from None

    cert = read("--tls-cert", getattr(args, "tls_cert", ""))
    key = read("--tls-key", getattr(args, "tls_key", ""))
    if bool(cert) != bool(key):
        raise UsageError("--tls-cert and --tls-key go together")
    return Security(
        read_secret(args.secret_file) if args.secret_file else b"",
        cert,
        key,
        read("--tls-ca", getattr(args, "tls_ca", "")),
    )
