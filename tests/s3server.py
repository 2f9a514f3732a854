"""A real S3-protocol server for the tests and ``bench/s3.py``: moto's standalone server
(``moto[server]``, a test dependency in pyproject.toml), started as a subprocess on a free
loopback port and stopped at the end.  Nothing inside the process under test is mocked: the
jobs talk S3 over HTTP to this server, through s3fs and botocore as they would to a store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

#: The credentials the server accepts (any, unless started with ``auth=True``).
ACCESS_KEY = "mapreduce-test-key"
SECRET_KEY = "mapreduce-test-secret-value"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_command() -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    return [sys.executable, "-m", "moto.server"]


class S3Server:
    """A running moto server.

    Attributes:
        endpoint: ``http://127.0.0.1:PORT``.
    """

    def __init__(self, pid: int, endpoint: str) -> None:
        self.pid = pid
        self.endpoint = endpoint

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that uses this server through AWS's variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
        )
        env.update(extra)
        return env

    def filesystem(self) -> object:
        """An s3fs file system on this server (for the test's own checks)."""
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        return s3fs.S3FileSystem(
            key=ACCESS_KEY,
            secret=SECRET_KEY,
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            use_listings_cache=False,
        )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def s3_server(
    *, auth: bool = False, log: Path | None = None, detached: bool = False
) -> Iterator[S3Server]:
    """Start moto's server on a free port; wait until it answers; stop it at the end.

    ``auth``: refuse every request whose access key it does not know (IAM checks on), to
    see a store deny access.  ``detached``: not a child of this process (a benchmark that
    reaps every descendant of its runs must not wait for it).
    """
    port = _free_port()
    env = dict(os.environ)
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    command = [*_server_command(), "-H", "127.0.0.1", "-p", str(port)]
    sink = log.open("ab") if log is not None else subprocess.DEVNULL
    process: subprocess.Popen[bytes] | None = None
    if detached:  # through a shell that exits at once: the server's parent is then init
        launcher = subprocess.run(
            ["sh", "-c", 'log="$1"; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!',
             "sh", str(log) if log is not None else os.devnull, *command],
            stdout=subprocess.PIPE, env=env, check=True,
        )  # fmt: skip
        pid = int(launcher.stdout)
    else:
        process = subprocess.Popen(
            command, stdout=sink, stderr=sink, env=env, start_new_session=True
        )
        pid = process.pid
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if (process is not None and process.poll() is not None) or not _alive(pid):
                raise RuntimeError("the S3 server exited at start")
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the S3 server did not answer in 120 s") from None
                time.sleep(0.1)
        yield S3Server(pid, endpoint)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if process is not None:
            process.wait()
        else:
            deadline = time.monotonic() + 60
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        if log is not None:
            sink.close()  # type: ignore[union-attr]
