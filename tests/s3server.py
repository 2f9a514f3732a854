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

    def __init__(self, process: subprocess.Popen[bytes], endpoint: str) -> None:
        self.process = process
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


@contextlib.contextmanager
def s3_server(*, auth: bool = False, log: Path | None = None) -> Iterator[S3Server]:
    """Start moto's server on a free port; wait until it answers; stop it at the end.

    ``auth``: refuse every request whose access key it does not know (IAM checks on), to
    see a store deny access.
    """
    port = _free_port()
    env = dict(os.environ)
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    sink = log.open("ab") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        [*_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=sink,
        stderr=sink,
        env=env,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the S3 server exited at start ({process.returncode})")
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the S3 server did not answer in 120 s") from None
                time.sleep(0.1)
        yield S3Server(process, endpoint)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if log is not None:
            sink.close()  # type: ignore[union-attr]
