"""Seeded chaos runs on several "machines": jobs under random faults, each output against --local.

    python scripts/chaos.py --seed 1 --jobs 50 --hosts 9

Makes N network-namespace hosts (tests/netbed.py, root only): a master with ``--state-dir`` on h0
and a worker on each other host.  Prepares K jobs, the paper's examples (word count, grep, sort,
inverted index, reverse links, URL frequency, term vectors) over generated inputs of random
sizes, with random R and split sizes, and runs each with ``--local`` (the oracle).  Then submits
them in order, ``--concurrent`` at a time (``mapreduce submit --wait`` on h0: the master runs
one, the others wait in its queue), while an injector thread applies faults one at a time, in
rounds that hold every kind once in a random order:

    kill-worker       SIGKILL a worker; start it again (same name and work directory)
                      0 to 2 worker timeouts later
    pause-worker      SIGSTOP every process of a worker's host until the master declares it
                      lost, then SIGCONT (it wakes up a zombie)
    partition-worker  a worker's switch port down for 0.5 to 3 worker timeouts, then up
    drop              every packet one worker sends to another host (worker or master) lost,
                      for 1 to 3 worker timeouts
    slow-link         what one worker sends to another host limited to 8 to 64 KB/s, for 1 to 3
                      worker timeouts
    kill-master       SIGKILL the master; start it again on its host with the same --state-dir
                      0 to 2 seconds later

Before each fault the injector waits (bounded) until the master answers and every worker is
alive; a cluster that does not heal is reported.  Every output is compared byte for byte with
the ``--local`` run's (every part file, ``_SUCCESS``, nothing else).  Prints each job and each
fault as they end, the faults injected by kind, and as its last line exactly
``chaos: K jobs, F faults, I identical``; exits 0 only when I = K (1 otherwise, 2 when it
cannot run here, 130 when interrupted).  Everything is removed at the end, also on Ctrl-C or
SIGTERM; the working directory (inputs, outputs, daemon logs) is kept when a job was not
identical, or with ``--keep``.  All randomness comes from ``--seed``; the timing of faults
against jobs does not, so two runs with one seed inject the same faults on the same hosts in
the same order, not at the same moments.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.netbed import (  # found through the line above
    MAPREDUCE,
    Daemon,
    Host,
    Netbed,
    NetbedError,
    differences,
    nft_missing,
    part_files,
    sigterm_as_interrupt,
    unavailable,
    wait_for,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
BENCH = REPO.parent / "shared" / "bench"  # gen_corpus.py and gen_records.py
KINDS = ("kill-worker", "pause-worker", "partition-worker", "drop", "slow-link", "kill-master")
NFT_KINDS = {"drop", "slow-link"}
SPLIT_SIZES = ("64K", "128K", "256K", "512K")
GREP_PATTERNS = (r"\bq[a-z]*\b", r"^[a-f]+ ", r"(ab|cd)e", r"x\w*y", r"\b(\w)\w*\1\b")
HEALTHY_WITHIN = 120.0  # seconds the cluster gets to heal before a fault (a bound, not a check)


def log(start: float, message: str) -> None:
    print(f"[{time.monotonic() - start:7.1f} s] {message}", flush=True)


def plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


# -- the jobs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One job: an example over a generated input, and where its ``--local`` output is."""

    number: int
    example: str
    inputs: Path
    reducers: int
    split_size: str
    params: tuple[str, ...]

    @property
    def dir(self) -> Path:
        return self.inputs.parent

    @property
    def local(self) -> Path:
        return self.dir / "local"

    @property
    def out(self) -> Path:
        return self.dir / "out"

    def args(self) -> list[str]:
        """The job's arguments of ``mapreduce run`` and ``submit`` (all but the output)."""
        job = str(EXAMPLES / f"{self.example}.py")
        options = ["-r", str(self.reducers), "--split-size", self.split_size]
        return [job, "-i", str(self.inputs), *options, *self.params]

    def describe(self) -> str:
        files = [p for p in self.inputs.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files) / 1e6
        return (
            f"{self.example} R={self.reducers} over {size:.2f} MB in {len(files)} files, "
            f"split {self.split_size}"
        )


def _generate(script: Path, out: Path, *args: object) -> None:
    command = [sys.executable, str(script), str(out), *map(str, args)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def make_case(number: int, rng: random.Random, root: Path) -> Case:
    """Job ``number``: a random example, its input generated with a seed drawn from ``rng``."""
    example = rng.choice(
        ("wordcount", "grep", "sort", "inverted_index", "reverse_links", "url_frequency",
         "term_vector")
    )  # fmt: skip
    inputs = root / f"job-{number:03d}" / "in"
    seed, files = rng.randrange(1 << 30), rng.randint(1, 4)
    params: tuple[str, ...] = ()
    corpus = ("--vocab", 5000, "--jobs", 1, "--seed", seed)
    if example in ("wordcount", "grep"):
        _generate(BENCH / "gen_corpus.py", inputs, "--mb", round(rng.uniform(1, 10), 2),
                  "--files", files, *corpus)  # fmt: skip
        if example == "grep":
            params = ("--param", f"pattern={rng.choice(GREP_PATTERNS)}")
    elif example == "inverted_index":  # a document per file
        _generate(BENCH / "gen_corpus.py", inputs, "--mb", round(rng.uniform(1, 6), 2),
                  "--files", rng.randint(3, 12), *corpus)  # fmt: skip
    elif example == "sort":
        _generate(BENCH / "gen_records.py", inputs, "--records", rng.randint(10000, 100000),
                  "--files", files, "--jobs", 1, "--seed", seed)  # fmt: skip
    elif example == "reverse_links":  # a page per file
        _generate(EXAMPLES / "gen_html_pages.py", inputs, "--pages", rng.randint(100, 400),
                  "--seed", seed)  # fmt: skip
    elif example == "url_frequency":
        _generate(EXAMPLES / "gen_access_logs.py", inputs, "--lines", rng.randint(20000, 150000),
                  "--files", files, "--seed", seed)  # fmt: skip
    else:  # term_vector
        _generate(EXAMPLES / "gen_web_docs.py", inputs, "--docs", rng.randint(4000, 30000),
                  "--files", files, "--seed", seed)  # fmt: skip
        params = ("--param", f"top={rng.randint(1, 10)}")
    split_size = rng.choice(SPLIT_SIZES)
    return Case(number, example, inputs, rng.randint(1, 6), split_size, params)


def run_local(case: Case) -> None:
    """The oracle: ``mapreduce run --local`` of the case."""
    command = [*MAPREDUCE, "run", *case.args(), "-o", str(case.local), "--local", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"job {case.number} ({case.example}) --local: {result.stderr}")


@dataclass
class Outcome:
    """How one job went on the cluster."""

    identical: bool
    verdict: str
    job_id: str = ""


def _output_text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def run_on_cluster(bed: Netbed, case: Case, timeout: float) -> Outcome:
    """``submit --wait`` on the master's host; compare the output with ``--local``'s."""
    assert bed.master is not None
    master = bed.master.address
    argv = [*MAPREDUCE, "submit", *case.args(), "-o", str(case.out), "--master", master]
    try:
        result = bed.run(bed.hosts[0], *argv, "--wait", "--quiet", timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        job_id = _output_text(exc.stdout).strip()
        if job_id:
            bed.mapreduce(bed.hosts[0], "cancel", job_id, "--master", master)
        return Outcome(False, f"not done after {timeout:g} s (cancelled)", job_id)
    job_id = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        return Outcome(False, f"failed (exit {result.returncode}): {last}", job_id)
    problems = differences(case.out, part_files(case.local))
    if problems:
        return Outcome(False, "NOT identical to --local: " + ", ".join(problems), job_id)
    return Outcome(True, "identical", job_id)


def run_job(bed: Netbed, case: Case, args: argparse.Namespace, injector: Injector) -> Outcome:
    """Run ``case`` on the cluster (in a thread of its own) and print how it went."""
    began = time.monotonic()
    outcome = run_on_cluster(bed, case, args.job_timeout)
    ended = time.monotonic()
    took = f"{ended - began:.1f} s, {plural(injector.during(began, ended), 'fault')}"
    figures = attempt_figures(bed, outcome.job_id) if outcome.job_id else ""
    took += f"; attempts: {figures}" if figures else ""
    head = f"job {case.number}/{args.jobs} {outcome.job_id}: {case.describe()}"
    log(injector.start, f"{head}: {outcome.verdict} ({took})")
    if outcome.identical:
        shutil.rmtree(case.dir)
    return outcome


def attempt_figures(bed: Netbed, job_id: str) -> str:
    """``3 killed, 1 backup`` attempts of the job, as the master tells (empty if it cannot)."""
    try:
        view = bed.api(f"/api/jobs/{job_id}")
    except (OSError, NetbedError):
        return ""
    attempts = [a for t in view["tasks"] for a in t["attempts"]]
    counts = Counter(a["state"] for a in attempts if a["state"] != "succeeded")
    counts["backup"] = sum(a["backup"] for a in attempts)
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items()) if n)


def unexpected_exits(bed: Netbed) -> str:
    """The daemons that ended other than by a SIGKILL of the injector, with their logs' ends."""
    lines = []
    for daemon in bed.daemons:
        code = daemon.process.poll()
        if daemon.role in ("master", "worker") and code not in (None, -signal.SIGKILL):
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            lines.append(f"{daemon.role} on {daemon.host.label} ended ({how}):")
            lines.append(daemon.log_tail(10))
    return "\n".join(lines)


# -- the faults ---------------------------------------------------------------------------------


@dataclass
class Injector:
    """Applies faults to a cluster on ``bed`` from a thread, one at a time, until stopped."""

    bed: Netbed
    rng: random.Random
    kinds: tuple[str, ...]
    worker_timeout: float
    start: float
    workers: dict[str, Daemon]  # the current worker daemon of each host, by label
    stop: threading.Event = field(default_factory=threading.Event)
    injected: Counter[str] = field(default_factory=Counter)
    unhealed: list[str] = field(default_factory=list)
    episodes: list[tuple[float, float]] = field(default_factory=list)  # (began, ended)
    under_way: float = 0.0  # when the fault under way began (0: none)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="injector", daemon=True)

    def begin(self) -> None:
        self.thread.start()

    def end(self) -> None:
        """Stop after undoing the fault under way."""
        self.stop.set()
        self.thread.join()

    def during(self, began: float, ended: float) -> int:
        """How many faults were under way at some moment between ``began`` and ``ended``."""
        episodes = [*self.episodes, (self.under_way or ended, ended)]
        return sum(b < ended and e > began for b, e in episodes)

    def _run(self) -> None:
        try:
            while True:
                for kind in self.rng.sample(self.kinds, len(self.kinds)):
                    gap = self.rng.uniform(0.2, 2.0) if self.episodes else 0  # the first at once
                    if self.stop.wait(gap) or not self._healthy():
                        return
                    self.under_way = time.monotonic()
                    what = self._inject(kind)
                    self.episodes.append((self.under_way, time.monotonic()))
                    self.under_way = 0.0
                    self.injected[kind] += 1
                    log(self.start, f"  fault {len(self.episodes)}: {kind} {what}")
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _healthy(self) -> bool:
        """Wait until the master answers and lists every worker alive; False: stopped."""

        def healthy() -> bool:
            if self.stop.is_set():
                return True
            try:
                workers = self.bed.api("/api/cluster")["workers"]
            except (OSError, NetbedError):
                return False
            return {w["id"] for w in workers if w["state"] == "alive"} >= self.workers.keys()

        try:
            wait_for(healthy, "every worker alive", timeout=HEALTHY_WITHIN, every=0.2)
        except TimeoutError as exc:
            self.unhealed.append(str(exc))
            log(self.start, f"  warning: the cluster did not heal: {exc}")
            log(self.start, unexpected_exits(self.bed) or "  (every daemon runs)")
        return not self.stop.is_set()

    def _hold(self, low: float, high: float) -> float:
        """Wait between ``low`` and ``high`` worker timeouts (less if stopped); return it."""
        began = time.monotonic()
        self.stop.wait(self.rng.uniform(low, high) * self.worker_timeout)
        return time.monotonic() - began

    def _victim(self) -> Daemon:
        return self.workers[self.rng.choice(sorted(self.workers))]

    def _other_host(self, host: Host) -> Host:
        return self.rng.choice([h for h in self.bed.hosts if h != host])

    def _lost(self, host: Host) -> bool:
        try:
            workers = self.bed.api("/api/cluster")["workers"]
        except (OSError, NetbedError):
            return False
        return any(w["id"] == host.label and w["state"] == "lost" for w in workers)

    def _inject(self, kind: str) -> str:
        """Apply one fault of ``kind`` and undo it; return what was done."""
        bed = self.bed
        if kind == "kill-master":
            assert bed.master is not None
            master = bed.master
            bed.kill(master)
            pause = self.rng.uniform(0, 2)
            self.stop.wait(pause)
            bed.restart(master)
            return f"on {master.host.label}, started again after {pause:.1f} s"
        victim = self._victim()
        host = victim.host
        if kind == "kill-worker":
            bed.kill(victim)
            try:
                held = self._hold(0, 2)
            finally:
                self.workers[host.label] = bed.restart(victim)
            return f"on {host.label}, started again after {held:.1f} s"
        if kind == "pause-worker":
            bed.pause(host)
            try:
                lost = lambda: self.stop.is_set() or self._lost(host)  # noqa: E731
                wait_for(lost, f"the master to declare {host.label} lost", timeout=60)
            finally:
                bed.resume(host)
            return f"{host.label} until declared lost"
        if kind == "partition-worker":
            bed.partition(host)
            try:
                held = self._hold(0.5, 3)
            finally:
                bed.heal(host)
            return f"{host.label} for {held:.1f} s"
        other = self._other_host(host)
        if kind == "drop":
            rule = bed.drop(host, other)
        else:
            rate = self.rng.choice((8, 16, 32, 64))
            rule = bed.slow(host, other, kbytes_per_second=rate)
        try:
            held = self._hold(1, 3)
        finally:
            bed.remove(rule)
        return f"{host.label} -> {other.label} ({rule.text}) for {held:.1f} s"


# -- the run ------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="of every random choice (default 1)")
    parser.add_argument("--jobs", type=int, default=10, help="jobs to run (default 10)")
    parser.add_argument(
        "--hosts", type=int, default=5, help="a master and HOSTS-1 workers (default 5, >= 3)"
    )
    parser.add_argument(
        "--faults", default=",".join(KINDS), help="kinds to inject, comma-separated (default all)"
    )
    parser.add_argument(
        "--worker-timeout", type=float, default=2.0, help="of the master (default 2 s)"
    )
    parser.add_argument(
        "--job-timeout", type=float, default=600.0, help="cancel a job after (default 600 s)"
    )
    parser.add_argument(
        "--concurrent", type=int, default=2, help="jobs submitted at once (default 2)"
    )
    parser.add_argument("--dir", type=Path, help="working directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        parser.error(f"--faults: unknown kinds {sorted(unknown)} (known: {', '.join(KINDS)})")
    if args.hosts < 3 or args.jobs < 1 or args.concurrent < 1:
        parser.error("at least 3 hosts (a master and two workers), 1 job, 1 at once")
    args.kinds = kinds
    return args


def cannot_run(kinds: tuple[str, ...]) -> str | None:
    reason = unavailable()
    if reason is None and NFT_KINDS & set(kinds):
        reason = nft_missing()
    if reason is None and not BENCH.is_dir():
        reason = f"{BENCH} is missing (the input generators of the shared/ folder)"
    return reason


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    reason = cannot_run(args.kinds)
    if reason is not None:
        print(f"chaos: cannot run here: {reason}", file=sys.stderr)
        return 2
    start = time.monotonic()
    root = args.dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    command = f"--seed {args.seed} --jobs {args.jobs} --hosts {args.hosts} --faults {args.faults}"
    log(start, f"chaos {command} in {root}")
    outcomes: list[Outcome] = []
    injector: Injector | None = None
    pool: ThreadPoolExecutor | None = None
    bed = Netbed(args.hosts, root / "hosts", syn_retries=1)
    code = 1
    with sigterm_as_interrupt():
        try:
            jobs = random.Random(f"{args.seed}:jobs")
            cases = [make_case(n, jobs, root) for n in range(1, args.jobs + 1)]
            for case in cases:
                run_local(case)
            log(start, f"{len(cases)} jobs generated and run with --local")
            bed.up()
            master_args = ("--worker-timeout", str(args.worker_timeout), "--backup-after", "3")
            state = ("--state-dir", str(bed.hosts[0].dir / "state"))
            _, workers = bed.cluster((*master_args, *state))
            log(start, f"a master on h0 and {len(workers)} workers on h1-h{len(workers)}")
            injector = Injector(
                bed, random.Random(f"{args.seed}:faults"), args.kinds, args.worker_timeout,
                start, {w.host.label: w for w in workers},
            )  # fmt: skip
            injector.begin()
            pool = ThreadPoolExecutor(args.concurrent, thread_name_prefix="job")
            running = [pool.submit(run_job, bed, case, args, injector) for case in cases]
            for future in as_completed(running):
                outcomes.append(future.result())
                if injector.error is not None:
                    raise injector.error
            code = 0 if all(o.identical for o in outcomes) else 1
        except KeyboardInterrupt:
            code = 130
        except Exception:  # reported, then the summary: the last line is always printed
            log(start, f"error:\n{traceback.format_exc()}")
            log(start, unexpected_exits(bed))
        finally:
            if pool is not None:  # its jobs end with the hosts (submit runs on h0)
                pool.shutdown(wait=False, cancel_futures=True)
            if injector is not None:
                injector.end()
            bed.down()
    return report(args, start, root, injector, outcomes, code)


def report(
    args: argparse.Namespace,
    start: float,
    root: Path,
    injector: Injector | None,
    outcomes: list[Outcome],
    code: int,
) -> int:
    injected: Counter[str] = injector.injected if injector else Counter()
    identical = sum(o.identical for o in outcomes)
    kinds = ", ".join(f"{kind} {injected[kind]}" for kind in args.kinds)
    print(f"faults by kind: {kinds}")
    if injector is not None and injector.unhealed:
        print(f"the cluster did not heal {len(injector.unhealed)} times: {injector.unhealed}")
    print(f"wall time {time.monotonic() - start:.0f} s, seed {args.seed}")
    if code == 0 and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"kept: {root} (inputs, outputs and daemon logs)")
    print(f"chaos: {args.jobs} jobs, {sum(injected.values())} faults, {identical} identical")
    return code


if __name__ == "__main__":
    sys.exit(main())
