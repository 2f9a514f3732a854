#!/usr/bin/env python3
"""Shuffle benchmark: MB/s of map output fetched from one worker's shuffle server by
another process on loopback, against the same files sent over a plain TCP socket.

One command.  It

1. makes real map output once (reused after): ``examples/sort.py``'s map task over
   each file of the TeraSort-style records of ``bench/sort.py`` (R = 1, so one run
   file per map task, together about the size of the input), in
   ``WORK_DIR/shuffle-runs-<format>-<records>-<files>f``;
2. starts a *server* process holding those runs in a real
   :class:`~mapreduce.worker.shuffle.ShuffleServer` (with a cluster secret, as every
   cluster has), and a second process serving the same files over plain TCP
   (``socket.sendfile``): the baseline, what the bytes cost without gRPC, chunk
   checksums or run verification;
3. fetches every run ``--repeat`` times with each, alternating, from this process,
   as a reducer does: :func:`~mapreduce.worker.shuffle.fetch_partition` on
   ``FETCH_PARALLELISM`` threads, each into a file (written, checked, renamed);
   the TCP client also writes each file;
4. prints the median wall, MB/s and the ratio of the shuffle's wall to the TCP's.

Usage::

    python bench/shuffle.py                 # 1,000,000 records (100 MB of runs), 5 rounds
    python bench/shuffle.py --quick         # 20,000 records, 2 rounds
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path

from harness import ensure_dataset
from measuring import REPO, BenchError, add_work_dir_argument, run_main
from measuring import work_dir_outside_repository as outside

sys.path.insert(0, str(REPO / "src"))

JOB = REPO / "examples" / "sort.py"
RUN_NAME = "part-00000.run"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, help="records of the input (1000000)")
    parser.add_argument("--files", type=int, help="input files, so map outputs (8)")
    parser.add_argument("--repeat", type=int, help="rounds of fetching everything (5)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke test")
    parser.add_argument("--serve", nargs="+", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--serve-tcp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--secret-file", help=argparse.SUPPRESS)
    add_work_dir_argument(parser, "the records and map outputs")
    args = parser.parse_args(argv)
    quick = {"records": 20_000, "files": 2, "repeat": 2}
    for name, value in (
        quick if args.quick else {"records": 1_000_000, "files": 8, "repeat": 5}
    ).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not (args.serve or args.serve_tcp):
        args.work_dir = outside(parser, args.work_dir)
    return args


# --------------------------------------------------------------------------- map outputs


def map_outputs(args: argparse.Namespace) -> list[Path]:
    """One run file per input file (made once): what a reducer fetches from the maps."""
    from mapreduce.core.spec import InputSplit, JobSpec
    from mapreduce.dataflow.runner import run_map_task

    target = args.work_dir / f"records-{args.records}-{args.files}f"
    options = {"records": args.records, "files": args.files}
    records = ensure_dataset(target, "gen_records.py", options, f"{args.records:,} records")
    from mapreduce.dataflow.records import MAGIC

    # named by the run format's version: runs of an older format are made again
    version = MAGIC.decode().strip().lower()
    runs = args.work_dir / f"shuffle-runs-{version}-{args.records}-{args.files}f"
    dirs = [runs / f"map-{i:05d}" for i in range(len(records.files))]
    if all((d / RUN_NAME).is_file() for d in dirs):
        return dirs
    shutil.rmtree(runs, ignore_errors=True)
    print(f"making the map outputs in {runs} ...", flush=True)
    for path, directory in zip(records.files, dirs, strict=True):
        split = InputSplit(str(path), 0, path.stat().st_size)
        spec = JobSpec("shuffle", JOB.name, num_reducers=1, output="-", splits=(split,))
        directory.mkdir(parents=True)
        run_map_task(spec.replace(boundaries=()), str(JOB), 0, split, str(directory))
    return dirs


# --------------------------------------------------------------------------- servers


def serve_shuffle_forever(dirs: list[str], secret_file: str) -> None:
    """The server process: a worker's shuffle server holding map ``i``'s run from dirs[i]."""
    from mapreduce.rpc.security import Security
    from mapreduce.worker.shuffle import MapOutputRegistry, serve_shuffle

    registry = MapOutputRegistry()
    for i, directory in enumerate(dirs):
        registry.add(("shuffle", i, 0), directory)
    security = Security(Path(secret_file).read_bytes().strip())
    _server, port = serve_shuffle("127.0.0.1:0", registry, security=security)
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes it


def serve_tcp_forever() -> None:
    """The baseline server: each connection names a file; it is sent with sendfile()."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    print(listener.getsockname()[1], flush=True)
    pool = futures.ThreadPoolExecutor(8)

    def send(conn: socket.socket) -> None:
        with conn:
            name = conn.makefile("rb").readline().strip().decode()
            with open(name, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                conn.sendall(size.to_bytes(8, "big"))
                conn.sendfile(f)

    while True:
        conn, _ = listener.accept()
        pool.submit(send, conn)


def start_server(argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, __file__, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        raise BenchError(f"the server did not start: {' '.join(argv)}")
    return process, int(line)


# --------------------------------------------------------------------------- clients


def fetch_all_shuffle(channel: object, count: int, into: Path) -> int:
    from mapreduce.worker.agent import FETCH_PARALLELISM
    from mapreduce.worker.shuffle import fetch_partition

    with futures.ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
        sizes = pool.map(
            lambda i: fetch_partition(channel, ("shuffle", i, 0), 0, str(into / f"{i}.run")),  # type: ignore[arg-type]
            range(count),
        )
        return sum(sizes)


def fetch_all_tcp(port: int, paths: list[Path], into: Path) -> int:
    from mapreduce.worker.agent import FETCH_PARALLELISM

    def fetch(i: int) -> int:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(str(paths[i]).encode() + b"\n")
            reader = conn.makefile("rb")
            size = int.from_bytes(reader.read(8), "big")
            got = 0
            with open(into / f"{i}.run", "wb") as out:
                while chunk := reader.read(1 << 20):
                    out.write(chunk)
                    got += len(chunk)
            if got != size:
                raise BenchError(f"TCP: {got} of {size} bytes of {paths[i]}")
            return got

    with futures.ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
        return sum(pool.map(fetch, range(len(paths))))


def timed(fetch: Callable[[Path], int], work: Path) -> tuple[float, int]:
    into = Path(tempfile.mkdtemp(dir=work))
    try:
        started = time.monotonic()
        size = fetch(into)
        return time.monotonic() - started, size
    finally:
        shutil.rmtree(into)


def run(args: argparse.Namespace) -> None:
    if args.serve:
        serve_shuffle_forever(args.serve, args.secret_file)
        return
    if args.serve_tcp:
        serve_tcp_forever()
        return
    from mapreduce.rpc.security import Security

    args.work_dir.mkdir(parents=True, exist_ok=True)
    dirs = map_outputs(args)
    paths = [d / RUN_NAME for d in dirs]
    total = sum(p.stat().st_size for p in paths)
    work = Path(tempfile.mkdtemp(prefix="fetched-", dir=args.work_dir))
    secret = work / "secret"
    secret.write_text(secrets.token_hex(32))
    shuffle, shuffle_port = start_server(["--serve", *map(str, dirs), "--secret-file", str(secret)])
    tcp, tcp_port = start_server(["--serve-tcp"])
    try:
        security = Security(secret.read_bytes())
        channel = security.channel(f"127.0.0.1:{shuffle_port}", [])
        walls: dict[str, list[float]] = {"gRPC shuffle": [], "plain TCP": []}
        print(f"map outputs: {len(paths)} runs, {total:,} bytes; {args.repeat} rounds, alternating")
        for _round in range(args.repeat):
            for name, fetch in (
                ("gRPC shuffle", lambda into: fetch_all_shuffle(channel, len(paths), into)),
                ("plain TCP", lambda into: fetch_all_tcp(tcp_port, paths, into)),
            ):
                wall, size = timed(fetch, work)
                if size != total:
                    raise BenchError(f"{name}: fetched {size:,} of {total:,} bytes")
                walls[name].append(wall)
    finally:
        for process in (shuffle, tcp):
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'name':<14} {'wall s (min-max)':>22} {'MB/s':>8}")
    for name, values in walls.items():
        median = statistics.median(values)
        spread = f"{median:.3f} ({min(values):.3f}-{max(values):.3f})"
        print(f"{name:<14} {spread:>22} {total / 1e6 / median:>8.1f}")
    ratio = statistics.median(walls["gRPC shuffle"]) / statistics.median(walls["plain TCP"])
    print(f"ratio gRPC shuffle/plain TCP wall: {ratio:.2f}x")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
