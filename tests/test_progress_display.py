"""The terminal progress display (live under a pseudo-terminal, plain lines when piped),
the final summary, ``status --job`` and ``logs``."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from mapreduce import client
from mapreduce.cluster import EmbeddedCluster
from mapreduce.core.config import MasterConfig
from mapreduce.planning import JobOptions
from tests.conftest import EXAMPLES, JOBS, run_cli


def run_in_pty(args: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; return status and output."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, close_fds=True
    )
    os.close(terminal)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(controller)
    return process.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_live_display_on_a_terminal(gutenberg: Path, tmp_path: Path) -> None:
    code, output = run_in_pty(
        [
            sys.executable,
            "-m",
            "mapreduce",
            "run",
            str(EXAMPLES / "wordcount.py"),
            "-i",
            str(gutenberg),
            "-o",
            str(tmp_path / "out"),
            "-r",
            "2",
            "--workers",
            "2",
            "--split-size",
            "256K",
        ]
    )
    assert code == 0, output
    assert "\x1b[" in output  # drawn with terminal control sequences
    assert "━" in output  # rich's bars
    assert "map" in output and "reduce" in output and "17/17" in output
    assert "(status page: http://127.0.0.1:" in output
    assert "succeeded: output in" in output  # the final summary
    assert "map input: 66602 records" in output


def test_plain_lines_when_piped(gutenberg: Path, tmp_path: Path) -> None:
    result = run_cli(
        "run",
        JOBS / "counters_and_context.py",
        "-i",
        gutenberg,
        "-o",
        tmp_path / "out",
        "--workers",
        "2",
        "--split-size",
        "256K",
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stderr and "━" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("[job-")]
    assert lines and "] succeeded, map 17/17, reduce 1/1" in lines[-1]
    assert "counters:" in result.stdout and "lines: 66602" in result.stdout
    assert "blank lines: 12749" in result.stdout


def test_failures_as_they_happen_status_and_logs(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("x\ny\n")
    with EmbeddedCluster(1, MasterConfig(worker_timeout=5)) as cluster:
        stub = cluster.connect()
        job_id = client.submit(
            stub,
            client.build_submission(
                JobOptions(
                    job_path=str(JOBS / "chatty.py"),
                    inputs=(str(inp),),
                    output=str(tmp_path / "out"),
                )
            ),
        )
        client.wait_for(stub, job_id)
        status = run_cli(
            "status",
            "--master",
            cluster.address,
            "--job",
            job_id,
            "--secret-file",
            cluster.secret_file,
        )
        assert status.returncode == 0, status.stderr
        assert f"[{job_id}] succeeded" in status.stdout
        assert "attempt failed: map-00000 attempt 0" in status.stdout
        assert "RuntimeError: first attempts always fail" in status.stdout
        assert "succeeded: output in" in status.stdout
        as_json = run_cli(
            "status",
            "--master",
            cluster.address,
            "--job",
            job_id,
            "--json",
            "--secret-file",
            cluster.secret_file,
        )
        assert json.loads(as_json.stdout)["state"] == "succeeded"
        logs = run_cli(
            "logs",
            job_id,
            "map-00000",
            "--master",
            cluster.address,
            "--secret-file",
            cluster.secret_file,
        )
        assert logs.returncode == 0, logs.stderr
        assert "== map-00000 attempt 0" in logs.stdout and ": failed" in logs.stdout
        assert "hello from map-00000 attempt 0" in logs.stdout
        assert "hello from map-00000 attempt 1" in logs.stdout
        assert "a warning on stderr" in logs.stdout
        assert 'chatty.py", line' in logs.stdout  # the traceback
        missing = run_cli(
            "logs",
            job_id,
            "map-00099",
            "--master",
            cluster.address,
            "--secret-file",
            cluster.secret_file,
        )
        assert missing.returncode == 1
        assert "the master says INVALID_ARGUMENT" in missing.stderr  # out of range
        assert "has 1 map tasks: no map-00099" in missing.stderr
