"""Several "machines" on one Linux host: network namespaces on a bridge, daemons in them, faults.

A :class:`Netbed` of N hosts is N network namespaces, each with one address (10.77.0.1, .2, ...)
on ``eth0``, a veth whose other end (the host's "switch port", ``p0``, ``p1``, ...) is on a
bridge in a hub namespace of its own, so nothing touches the real host's network.  Commands and
daemons run "on" a host through ``ip netns exec``; the file system is shared, as a cluster file
system would be.  Recipe and measurements: ../shared/research/reliability.md section 5.

Every name starts with ``nb-PID-N-`` (the creating process and a counter), so runs in parallel
never collide, and a run whose process is gone is recognised and removed (its processes killed)
by the next one: :func:`sweep_leftovers`.  :meth:`Netbed.down` kills every process in the hosts
and deletes the namespaces, which removes the veths, the bridge and the nftables rules with them;
tmpfs "disks" live in a private mount namespace of the worker they belong to and go with it.

Faults: :meth:`Netbed.kill` (SIGKILL a daemon's process group), :meth:`Netbed.pause` and
:meth:`Netbed.resume` (SIGSTOP / SIGCONT every process of a host), :meth:`Netbed.partition` and
:meth:`Netbed.heal` (the switch port down / up: silence both ways), :meth:`Netbed.drop` (nftables
in the sender's namespace: every packet to one other host is lost), :meth:`Netbed.slow` (nftables
rate limit towards one host), ``start_worker(disk=SIZE)`` (the work directory is a tmpfs of that
size).  There is no netem in this kernel (no delay or random loss in the kernel).

The JSON API of the master (``/api/cluster``, ``/api/jobs/JOB``) is read through a socket opened
inside the master's namespace (:func:`connect_in`), so observing a run costs no process.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

SUBNET = "10.77.0"
MASTER_PORT = 7070
HTTP_PORT = 7071
NAME = re.compile(r"^nb-(\d+)-(\d+)-")
NFT_TABLE = "netbed"
MAPREDUCE = [sys.executable, "-m", "mapreduce"]
_CLONE_NEWNET = 0x40000000
_runs = itertools.count()
T = TypeVar("T")


class NetbedError(RuntimeError):
    """A harness command failed (the message has its output)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60, check=False)
    if check and result.returncode != 0:
        raise NetbedError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def unavailable() -> str | None:
    """Why namespace hosts cannot be made here (for a skip), or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if os.geteuid() != 0:
        return f"network namespaces need root (this is uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"nb-{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    _ip("netns", "del", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    return None


def nft_missing() -> str | None:
    """Why nftables rules cannot be made (for a skip), or None."""
    if shutil.which("nft") is None:
        return "nft (nftables) is missing; bash scripts/check.sh installs it"
    return None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended; this pid 1 may never reap it)."""
    return process_state(pid) not in ("", "Z")


def namespaces() -> list[str]:
    """The names of every network namespace (``ip netns list``)."""
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def pids_in(namespace: str) -> list[int]:
    """Every process whose network namespace is ``namespace``."""
    result = _ip("netns", "pids", namespace, check=False)
    return [int(p) for p in result.stdout.split()]


def delete_namespace(namespace: str) -> None:
    """SIGKILL every process in ``namespace`` (stopped ones too), then delete it."""
    deadline = time.monotonic() + 30
    while pids := pids_in(namespace):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NetbedError(f"processes {pids} of {namespace} do not die")
        time.sleep(0.05)
    _ip("netns", "del", namespace, check=False)


def sweep_leftovers(everything: bool = False) -> list[str]:
    """Remove the namespaces of earlier runs whose process is gone (``everything``: all runs)."""
    swept = []
    for name in namespaces():
        match = NAME.match(name)
        if match and (everything or not _alive(int(match[1]))):
            delete_namespace(name)
            swept.append(name)
    return swept


def connect_in(namespace: str, address: tuple[str, int], timeout: float = 10) -> socket.socket:
    """A TCP connection opened from inside ``namespace``.

    ``setns`` moves only the calling thread, so a short-lived thread enters the namespace and
    opens the socket; a socket stays in the namespace it was made in.
    """
    made: list[socket.socket | BaseException] = []

    def enter_and_connect() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{namespace}", "rb") as handle:
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {namespace}")
            made.append(socket.create_connection(address, timeout))
        except BaseException as exc:  # handed to the caller's thread
            made.append(exc)

    thread = threading.Thread(target=enter_and_connect, name=f"connect-in-{namespace}")
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def wait_for(
    condition: Callable[[], T | None], what: str, timeout: float = 60, every: float = 0.1
) -> T:
    """Poll ``condition`` until it returns something true; give up after ``timeout`` seconds.

    The timeout is a bound on a wait, never a check: nothing asserts how long a wait took.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(every)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt meanwhile, so that teardown runs on ``kill PID``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class Host:
    """One "machine": a network namespace with one address."""

    label: str  # h0, h1, ...: also the worker's name
    namespace: str
    ip: str
    port: str  # its veth end on the bridge (the switch port)
    dir: Path  # its own directory for work directories and logs


@dataclass
class Daemon:
    """A ``mapreduce master`` or ``worker`` running on a host, in a process group of its own."""

    host: Host
    role: str
    process: subprocess.Popen[bytes]
    log: Path
    address: str  # master: host:port it serves on; worker: the master it serves
    argv: list[str]  # its command, as run on its host (for :meth:`Netbed.restart`)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass(frozen=True)
class Rule:
    """An nftables rule in a host's namespace (remove it with :meth:`Netbed.remove`)."""

    host: Host
    handle: int
    text: str


class Netbed:
    """N hosts on one bridge; use as a context manager, or call :meth:`up` and :meth:`down`."""

    def __init__(self, hosts: int, root: Path, *, syn_retries: int | None = None) -> None:
        """``syn_retries``: the hosts' ``net.ipv4.tcp_syn_retries`` (1: a connect to a
        silent peer fails after about 3 s instead of 2 minutes), or the kernel's default."""
        if not 1 <= hosts <= 250:
            raise ValueError(f"1 to 250 hosts (got {hosts})")
        self.prefix = f"nb-{os.getpid()}-{next(_runs)}-"
        self.hub = self.prefix + "hub"
        self.root = root
        self.syn_retries = syn_retries
        self.hosts = [
            Host(f"h{i}", f"{self.prefix}h{i}", f"{SUBNET}.{i + 1}", f"p{i}", root / f"h{i}")
            for i in range(hosts)
        ]
        self.daemons: list[Daemon] = []
        self.master: Daemon | None = None
        #: the cluster secret every command run on a host gets ($MAPREDUCE_SECRET_FILE):
        #: daemons on a host's own address must have one
        self.secret_file = root / "secret"

    def __enter__(self) -> Netbed:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- topology ---------------------------------------------------------------------------

    def up(self) -> None:
        """Remove leftovers of dead runs, then create the hub, its bridge and every host."""
        sweep_leftovers()
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.secret_file.exists():
            fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        try:
            _ip("netns", "add", self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for host in self.hosts:
                host.dir.mkdir(parents=True, exist_ok=True)
                _ip("netns", "add", host.namespace)
                veth = (
                    f"eth0 netns {host.namespace} type veth peer name {host.port} netns {self.hub}"
                )
                _ip("link", "add", *veth.split())
                _ip("-n", host.namespace, "addr", "add", f"{host.ip}/24", "dev", "eth0")
                _ip("-n", host.namespace, "link", "set", "lo", "up")
                _ip("-n", host.namespace, "link", "set", "eth0", "up")
                _ip("-n", self.hub, "link", "set", host.port, "master", "br0", "up")
                if self.syn_retries is not None:
                    setting = f"echo {self.syn_retries} > /proc/sys/net/ipv4/tcp_syn_retries"
                    self.run(host, "sh", "-c", setting).check_returncode()
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop every daemon and delete every namespace of this run; safe to call twice."""
        errors: list[str] = []
        for daemon in self.daemons:
            if daemon.process.returncode is None:  # else reaped: see signal_group
                signal_group(daemon.process, signal.SIGCONT, signal.SIGKILL)
            daemon.process.wait()
        for namespace in [h.namespace for h in self.hosts] + [self.hub]:
            try:
                if namespace in namespaces():
                    delete_namespace(namespace)
            except (NetbedError, OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{namespace}: {exc}")
        if errors:
            raise NetbedError("teardown failed: " + "; ".join(errors))

    # -- commands ---------------------------------------------------------------------------

    def command(self, host: Host, *args: str | os.PathLike[str]) -> list[str]:
        """``args`` as run on ``host`` (with the cluster secret in its environment)."""
        secret = f"MAPREDUCE_SECRET_FILE={self.secret_file}"
        return ["ip", "netns", "exec", host.namespace, "env", secret, *map(str, args)]

    def run(
        self, host: Host, *args: str | os.PathLike[str], timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on ``host`` and wait for it (output captured, no check)."""
        return subprocess.run(
            self.command(host, *args), capture_output=True, text=True, timeout=timeout, check=False
        )

    def mapreduce(
        self, host: Host, *args: str | os.PathLike[str]
    ) -> subprocess.CompletedProcess[str]:
        """``python -m mapreduce ARGS`` on ``host``."""
        return self.run(host, *MAPREDUCE, *args)

    def spawn(self, host: Host, role: str, args: list[str], address: str) -> Daemon:
        """Start a daemon on ``host`` in a new session; its output goes to a log in host.dir."""
        log = host.dir / f"{role}-{sum(d.host == host for d in self.daemons)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                self.command(host, *args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        daemon = Daemon(host, role, process, log, address, list(args))
        self.daemons.append(daemon)
        return daemon

    # -- mapreduce daemons ------------------------------------------------------------------

    def start_master(self, host: Host, *args: str) -> Daemon:
        """``mapreduce master`` on ``host``; returns once its JSON API answers."""
        address = f"{host.ip}:{MASTER_PORT}"
        argv = [*MAPREDUCE, "master", "--listen", address, "--http-port", str(HTTP_PORT), *args]
        return self._serving(self.spawn(host, "master", argv, address))

    def _serving(self, master: Daemon) -> Daemon:
        """Make ``master`` the bed's master; return it once its JSON API answers."""
        self.master = master
        wait_for(
            lambda: self._check(master) and self._answers(), f"the master on {master.host.label}"
        )
        return master

    def start_worker(self, host: Host, *args: str, disk: str | None = None) -> Daemon:
        """``mapreduce worker --name LABEL`` on ``host``, with a work directory in host.dir.

        ``disk``: the work directory is a tmpfs of that size (``64k``, ``1m``), mounted in a
        mount namespace of the worker's own, so it disappears with the worker.
        Does not wait: see :meth:`wait_for_workers`.
        """
        assert self.master is not None, "start a master first"
        workdir = host.dir / f"work-{sum(d.host == host for d in self.daemons)}"
        workdir.mkdir(parents=True)
        argv = [*MAPREDUCE, "worker", "--master", self.master.address, "--listen", f"{host.ip}:0"]
        argv += ["--name", host.label, "--workdir", str(workdir), *args]
        if disk is not None:
            argv = on_tmpfs(disk, workdir, argv)
        return self.spawn(host, "worker", argv, self.master.address)

    def wait_for_workers(self, *hosts: Host, timeout: float = 60) -> None:
        """Wait until the master lists a live worker for each of ``hosts``."""
        want = {h.label for h in hosts}

        def registered() -> bool:
            for daemon in self.daemons:
                if daemon.role in ("master", "worker"):
                    self._check(daemon)
            alive = {w["id"] for w in self.api("/api/cluster")["workers"] if w["state"] == "alive"}
            return want <= alive

        wait_for(registered, f"workers {sorted(want)} to register", timeout)

    def cluster(
        self, master_args: tuple[str, ...] = (), worker_args: tuple[str, ...] = ()
    ) -> tuple[Daemon, list[Daemon]]:
        """A master on h0 and a worker on every other host, all registered."""
        master = self.start_master(self.hosts[0], *master_args)
        workers = [self.start_worker(h, *worker_args) for h in self.hosts[1:]]
        self.wait_for_workers(*self.hosts[1:])
        return master, workers

    def restart(self, daemon: Daemon) -> Daemon:
        """Start a killed daemon's command again on its host: a master on the same address
        and ``--state-dir`` (returns once it answers), a worker with the same name and work
        directory (does not wait for it to register)."""
        if daemon.process.poll() is None:
            raise NetbedError(f"the {daemon.role} on {daemon.host.label} still runs: kill it first")
        again = self.spawn(daemon.host, daemon.role, daemon.argv, daemon.address)
        return self._serving(again) if daemon.role == "master" else again

    def api(self, path: str) -> Any:
        """GET ``path`` of the master's JSON API (from inside its namespace)."""
        assert self.master is not None, "start a master first"
        host = self.master.host
        sock = connect_in(host.namespace, (host.ip, HTTP_PORT))
        connection = http.client.HTTPConnection(host.ip, HTTP_PORT, timeout=30)
        connection.sock = sock
        bearer = {"Authorization": f"Bearer {self.secret_file.read_text().strip()}"}
        try:
            connection.request("GET", path, headers=bearer)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise NetbedError(f"GET {path}: HTTP {response.status}: {body[:200]!r}")
        return json.loads(body)

    def _answers(self) -> bool:
        try:
            self.api("/api/cluster")
        except OSError:
            return False
        return True

    def _check(self, daemon: Daemon) -> bool:
        """True while ``daemon`` runs, unless it was killed on purpose; else raise with its log."""
        code = daemon.process.poll()
        if code is not None and code != -signal.SIGKILL:
            raise NetbedError(
                f"{daemon.role} on {daemon.host.label} exited ({code}):\n{daemon.log_tail()}"
            )
        return True

    # -- faults -----------------------------------------------------------------------------

    def kill(self, daemon: Daemon) -> None:
        """SIGKILL the daemon and every process it started (its process group)."""
        signal_group(daemon.process, signal.SIGKILL)
        daemon.process.wait()

    def pause(self, host: Host) -> None:
        """SIGSTOP every process on ``host``, until all are stopped (a frozen machine)."""

        def all_stopped() -> bool:
            running = [p for p in pids_in(host.namespace) if process_state(p) not in ("T", "Z", "")]
            for pid in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            return not running

        wait_for(all_stopped, f"every process on {host.label} to stop", timeout=30, every=0.02)

    def resume(self, host: Host) -> None:
        """SIGCONT every process on ``host``."""
        for pid in pids_in(host.namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def partition(self, host: Host) -> None:
        """Cut ``host`` off: its switch port goes down, packets either way vanish silently."""
        _ip("-n", self.hub, "link", "set", host.port, "down")

    def heal(self, host: Host) -> None:
        """Undo :meth:`partition`."""
        _ip("-n", self.hub, "link", "set", host.port, "up")

    def drop(self, src: Host, dst: Host) -> Rule:
        """Lose every packet ``src`` sends to ``dst`` (so no TCP connection between them works,
        while both still reach everyone else)."""
        return self._nft_rule(src, f"ip daddr {dst.ip} counter drop")

    def slow(self, src: Host, dst: Host, kbytes_per_second: int, burst_kbytes: int = 4) -> Rule:
        """Drop what ``src`` sends to ``dst`` beyond a rate (after a burst): TCP between them
        slows down to about that rate, with retransmissions."""
        limit = f"limit rate over {kbytes_per_second} kbytes/second burst {burst_kbytes} kbytes"
        return self._nft_rule(src, f"ip daddr {dst.ip} {limit} counter drop")

    def dropped(self, rule: Rule) -> int:
        """How many packets ``rule`` has dropped so far."""
        listing = self._nft(rule.host, "--handle", "list", "chain", "inet", NFT_TABLE, "output")
        for line in listing.splitlines():
            if line.rstrip().endswith(f"# handle {rule.handle}"):
                match = re.search(r"counter packets (\d+)", line)
                if match:
                    return int(match[1])
        raise NetbedError(f"no counter for rule {rule.handle} in:\n{listing}")

    def remove(self, rule: Rule) -> None:
        """Delete an nftables rule made by :meth:`drop` or :meth:`slow`."""
        self._nft(
            rule.host, "delete", "rule", "inet", NFT_TABLE, "output", "handle", str(rule.handle)
        )

    def _nft(self, host: Host, *args: str) -> str:
        reason = nft_missing()
        if reason:
            raise NetbedError(reason)
        result = self.run(host, "nft", *args, timeout=60)
        if result.returncode != 0:
            raise NetbedError(f"nft {' '.join(args)} on {host.label}: {result.stderr.strip()}")
        return result.stdout

    def _nft_rule(self, host: Host, rule: str) -> Rule:
        self._nft(host, "add", "table", "inet", NFT_TABLE)
        hook = "{ type filter hook output priority 0; policy accept; }"
        self._nft(host, "add", "chain", "inet", NFT_TABLE, "output", hook)
        echoed = self._nft(
            host, "--echo", "--handle", "add", "rule", "inet", NFT_TABLE, "output", *rule.split()
        )
        match = re.search(r"# handle (\d+)", echoed)
        if match is None:
            raise NetbedError(f"no rule handle in nft's answer: {echoed!r}")
        return Rule(host, int(match[1]), rule)


def signal_group(process: subprocess.Popen[Any], *signals: signal.Signals) -> None:
    """Send ``signals`` to the process group that ``process`` leads, unless ``process`` has
    been reaped: its id may then lead someone else's group (ids wrap at 32768 here, and the
    machine is shared), and that group would get the signals.  A leader that has ended but is
    not reaped yet keeps its id, so its group can still be signalled safely."""
    for sig in signals:
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)


def part_files(output: Path) -> dict[str, bytes]:
    """``{"part-00000": bytes, ...}``: the part files of a job's output directory."""
    return {p.name: p.read_bytes() for p in sorted(output.glob("part-*"))}


def differences(output: Path, reference: dict[str, bytes]) -> list[str]:
    """What keeps a job's ``output`` directory from being the ``reference`` (:func:`part_files`
    of a ``--local`` run): part files that differ, are missing or are extra, a missing
    ``_SUCCESS``, anything else in it (``_summary.json`` aside).  Empty: byte-identical."""
    found = part_files(output)

    def how(name: str) -> str:
        return "missing" if name not in found else "extra" if name not in reference else "differs"

    names = sorted(found.keys() | reference.keys())
    problems = [f"{name} {how(name)}" for name in names if found.get(name) != reference.get(name)]
    if not (output / "_SUCCESS").is_file():
        problems.append("_SUCCESS missing")
    expected = {*reference, *found, "_SUCCESS", "_summary.json"}
    problems += [f"{p.name} unexpected" for p in sorted(output.glob("*")) if p.name not in expected]
    return problems


def on_tmpfs(size: str, directory: Path, argv: list[str]) -> list[str]:
    """``argv`` run with a tmpfs of ``size`` (``64k``, ``1m``) mounted on ``directory``, in a
    private mount namespace: nobody else sees it, and it goes away with the last process."""
    mount = 'mount -t tmpfs -o "size=$1" netbed "$2" && shift 2 && exec "$@"'
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "tmpfs"]
    return [*wrap, size, str(directory), *argv]


def _stat(pid: int) -> tuple[str, int]:
    """``(state, parent pid)`` of a process (state ``T`` stopped, ``Z`` zombie; ``""`` gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", 0
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def process_state(pid: int) -> str:
    """``R``, ``S``, ``T`` (stopped), ``Z`` (ended, not reaped yet)...; ``""``: no such process."""
    return _stat(pid)[0]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _stat(int(p))[1] == pid]
