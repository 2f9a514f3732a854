"""The ``mapreduce`` command.

Exit status: 0 on success, 1 when a job fails, 2 for a usage error (a bad
flag, job file, input or output), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from mapreduce import __version__
from mapreduce.dataflow.formats import INPUT_FORMATS
from mapreduce.errors import JobFailedError, MapReduceError, UsageError
from mapreduce.local import run_local
from mapreduce.planning import DEFAULT_MEMORY_MB, DEFAULT_SPLIT_SIZE, JobOptions

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


def _add_run_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="run a job",
        description="Run the MapReduce job defined in JOB (a Python file with map and reduce).",
    )
    run.add_argument("job", metavar="JOB.py", help="the job file")
    run.add_argument(
        "--input",
        "-i",
        action="append",
        nargs="+",
        required=True,
        metavar="PATH",
        help="input files, directories (read recursively; names starting with _ or . are "
        "skipped) or glob patterns; repeatable",
    )
    run.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="DIR",
        help="output directory; must not exist unless --overwrite",
    )
    run.add_argument(
        "--reducers",
        "-r",
        type=int,
        default=1,
        metavar="R",
        help="number of reduce tasks, hence of part-NNNNN files (default 1)",
    )
    run.add_argument(
        "--local",
        action="store_true",
        help="run sequentially in this process (the reference execution)",
    )
    run.add_argument(
        "--input-format",
        choices=sorted(INPUT_FORMATS),
        help="how input is read; overrides the job file's INPUT_FORMAT "
        "(default: the job's, else lines)",
    )
    run.add_argument(
        "--split-size",
        type=parse_size,
        default=DEFAULT_SPLIT_SIZE,
        metavar="SIZE",
        help="largest byte range of a file one map task reads, e.g. 64M (default 64M)",
    )
    run.add_argument(
        "--memory-mb",
        type=int,
        default=DEFAULT_MEMORY_MB,
        metavar="MB",
        help="map output kept in memory before spilling sorted runs to disk "
        f"(default {DEFAULT_MEMORY_MB})",
    )
    run.add_argument(
        "--param",
        "-p",
        action="append",
        type=parse_param,
        default=[],
        metavar="NAME=VALUE",
        help="a parameter for job code, read with mapreduce.params(); repeatable",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the output directory if it exists (only once the job has succeeded)",
    )
    run.add_argument(
        "--skip-bad-records",
        type=int,
        default=0,
        metavar="N",
        help="skip up to N records that fail to decode or make user code raise, "
        "instead of failing the job (default 0)",
    )
    run.add_argument(
        "--no-combiner",
        dest="use_combiner",
        action="store_false",
        help="do not run the job's combine function",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="print no summary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapreduce",
        description="MapReduce (Dean & Ghemawat, OSDI 2004) in Python.",
    )
    parser.add_argument("--version", action="version", version=f"mapreduce {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(subparsers)
    return parser


def _run(args: argparse.Namespace) -> int:
    if not args.local:
        raise UsageError(
            "the distributed runtime is not available yet: add --local to run the job "
            "sequentially in this process"
        )
    options = JobOptions(
        job_path=args.job,
        inputs=tuple(path for group in args.input for path in group),
        output=args.output,
        num_reducers=args.reducers,
        input_format=args.input_format,
        split_size=args.split_size,
        memory_mb=args.memory_mb,
        params=dict(args.param),
        overwrite=args.overwrite,
        skip_bad_records=args.skip_bad_records,
        use_combiner=args.use_combiner,
    )
    summary = run_local(options)
    if not args.quiet:
        print(summary.render())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mapreduce`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
    except JobFailedError as exc:
        print(f"mapreduce: {exc}", file=sys.stderr)
        return 1
    except MapReduceError as exc:
        print(f"mapreduce: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mapreduce: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2
