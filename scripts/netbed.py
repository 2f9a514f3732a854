"""Several "machines" on this Linux host, by hand: the test suite's netbed (tests/netbed.py).

    python scripts/netbed.py up --hosts 4 --cluster      # until Ctrl-C: a master on h0,
                                                         # a worker on every other host
    python scripts/netbed.py run --hosts 4 --cluster -- mapreduce submit JOB.py \\
        --master 10.77.0.1:7070 -i IN -o OUT --wait      # a command on h0, then teardown
    python scripts/netbed.py down                        # what killed runs left behind

Root only.  ``up`` prints each host's namespace and address and the commands that cut a host
off; everything is removed when it stops (Ctrl-C, SIGTERM), and ``down`` removes the
namespaces (and kills the processes) of runs that could not clean up (``kill -9``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.netbed import (  # found through the line above
    HTTP_PORT,
    Netbed,
    sigterm_as_interrupt,
    sweep_leftovers,
    unavailable,
)


def _make(args: argparse.Namespace) -> Netbed:
    reason = unavailable()
    if reason is not None:
        sys.exit(f"netbed: {reason}")
    root = Path(args.dir or tempfile.mkdtemp(prefix="netbed-"))
    return Netbed(args.hosts, root, syn_retries=args.syn_retries)


def _describe(bed: Netbed) -> str:
    lines = [f"netbed {bed.prefix}: {len(bed.hosts)} hosts, files in {bed.root}"]
    for host in bed.hosts:
        roles = ", ".join(f"{d.role} (log {d.log})" for d in bed.daemons if d.host == host)
        lines.append(f"  {host.label}  {host.ip:<11} {host.namespace:<18} {roles}")
    if bed.master is not None:
        page = f"http://{bed.master.host.ip}:{HTTP_PORT}/"
        lines.append(f"master: {bed.master.address}, status page {page} (from its host)")
    first = bed.hosts[-1]
    lines += [
        f"on a host:    ip netns exec {first.namespace} COMMAND",
        f"partition:    ip -n {bed.hub} link set {first.port} down   (heal: up)",
        f"pause:        kill -STOP $(ip netns pids {first.namespace})   (resume: -CONT)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="make the hosts and keep them until Ctrl-C or SIGTERM")
    run = commands.add_parser("run", help="make the hosts, run a command on one, remove them")
    down = commands.add_parser("down", help="remove the namespaces of runs that are gone")
    down.add_argument("--all", action="store_true", help="of every run, also running ones")
    for sub in (up, run):
        sub.add_argument("--hosts", type=int, default=4, help="how many (default 4)")
        sub.add_argument("--cluster", action="store_true", help="master on h0, workers on h1..")
        sub.add_argument("--master-arg", action="append", default=[], metavar="ARG",
                         help="extra argument of `mapreduce master` (repeat)")  # fmt: skip
        sub.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                         help="extra argument of `mapreduce worker` (repeat)")  # fmt: skip
        sub.add_argument("--syn-retries", type=int, help="the hosts' net.ipv4.tcp_syn_retries")
        sub.add_argument("--dir", help="for logs and work directories (default: a new temp dir)")
    run.add_argument("--on", default="h0", help="the host that runs the command (default h0)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = parser.parse_args(argv)

    if args.command == "down":
        for name in sweep_leftovers(everything=args.all):
            print(f"removed {name}")
        return 0
    cmd: list[str] = getattr(args, "cmd", [])
    cmd = cmd[1:] if cmd[:1] == ["--"] else cmd
    if args.command == "run" and not cmd:
        parser.error("run needs a command after --")
    bed = _make(args)
    with sigterm_as_interrupt():
        try:
            bed.up()
            if args.cluster:
                bed.cluster(tuple(args.master_arg), tuple(args.worker_arg))
            print(_describe(bed), file=sys.stderr, flush=True)
            if args.command == "up":
                print("up; Ctrl-C or SIGTERM removes it all", file=sys.stderr, flush=True)
                while True:
                    signal.pause()
            return _run_on(bed, args.on, cmd)
        except KeyboardInterrupt:
            return 0 if args.command == "up" else 130
        finally:
            bed.down()
            print(f"netbed {bed.prefix}: removed", file=sys.stderr, flush=True)


def _run_on(bed: Netbed, label: str, cmd: list[str]) -> int:
    """Run ``cmd`` on host ``label``, with this Python's scripts (``mapreduce``) on the PATH."""
    host = next(h for h in bed.hosts if h.label == label)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["NETBED_HOSTS"] = " ".join(f"{h.label}={h.ip}" for h in bed.hosts)
    if bed.master is not None:
        env["NETBED_MASTER"] = bed.master.address
    return subprocess.run(bed.command(host, *cmd), env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
