#!/usr/bin/env python3
"""One job on a fresh set of daemons on 127.0.0.1: a master, ``--workers`` workers,
``mapreduce submit --wait``, then every daemon stopped; for ``bench/sort.py --security``.

``--security`` picks what every process is given:

* ``none``: no cluster secret (allowed: everything listens on loopback);
* ``secret``: a cluster secret (``mapreduce secret``), sent and checked on every call;
* ``tls``: the secret and mutual TLS (``mapreduce certs`` for 127.0.0.1) on every
  gRPC connection, the shuffle's included.

Usage::

    python bench/daemon_run.py --security tls --workers 2 -- JOB -i INPUT -o OUTPUT -r 4 -q

Everything after ``--`` goes to ``mapreduce submit`` (with ``--master`` and
``--wait`` added).  The measured wall of this command includes starting the daemons
(and their TLS handshakes), as ``mapreduce run --workers N`` includes starting its
embedded cluster.  Exit status: submit's.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from measuring import mapreduce_command

MODES = ("none", "secret", "tls")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--security", choices=MODES, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args, rest = parser.parse_known_args(argv)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return args, rest


def credentials(mode: str, scratch: Path, mapreduce: list[str], env: dict[str, str]) -> list[str]:
    """The flags every process gets for ``mode`` (the files made in ``scratch``)."""
    if mode == "none":
        return []
    secret = scratch / "secret"
    subprocess.run([*mapreduce, "secret", str(secret)], env=env, check=True, capture_output=True)
    flags = ["--secret-file", str(secret)]
    if mode == "tls":
        tls = scratch / "tls"
        made = [*mapreduce, "certs", str(tls), "--host", "127.0.0.1"]
        subprocess.run(made, env=env, check=True, capture_output=True)
        flags += ["--tls-ca", str(tls / "ca.pem"), "--tls-cert", str(tls / "cert.pem")]
        flags += ["--tls-key", str(tls / "key.pem")]
    return flags


@contextlib.contextmanager
def daemons(
    flags: list[str], workers: int, scratch: Path, mapreduce: list[str], env: dict[str, str]
) -> Iterator[str]:
    """A master and ``workers`` workers; yields the master's address; stops them all."""
    started: list[subprocess.Popen[str]] = []
    try:
        master = subprocess.Popen(
            [*mapreduce, "master", "--listen", "127.0.0.1:0", "--no-http", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        started.append(master)
        assert master.stdout is not None
        address = ""
        for line in master.stdout:
            if line.startswith("master listening on "):
                address = line.split()[-1]
                break
        if not address:
            raise SystemExit(f"the master did not start (exit {master.wait()})")
        for i in range(workers):
            argv = [*mapreduce, "worker", "--master", address, "--listen", "127.0.0.1:0"]
            argv += ["--workdir", str(scratch / f"worker-{i}"), *flags]
            started.append(
                subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
                )
            )
        yield address
    finally:
        for process in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args, submit = parse_args(argv)
    mapreduce, env = mapreduce_command()
    scratch = Path(tempfile.mkdtemp(prefix="mapreduce-daemons-"))
    try:
        flags = credentials(args.security, scratch, mapreduce, env)
        with daemons(flags, args.workers, scratch, mapreduce, env) as address:
            argv = [*mapreduce, "submit", *submit, "--master", address, "--wait", *flags]
            return subprocess.run(argv, env=env, check=False).returncode
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
