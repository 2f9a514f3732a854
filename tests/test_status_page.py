"""The master's status web page, JSON API and /metrics, looked at in a real (headless) browser.

A job is held still mid-run (``tests/jobs/stall.py``: the map of stall.txt waits for a release
file) so that the page, ``/api/jobs/JOB`` and ``/metrics`` can be compared on a state that does
not move; then again once the job has succeeded.  The pages are rendered by Chromium
(``--dump-dom``, ``--screenshot``); ``scripts/check.sh`` installs it when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mapreduce import client
from mapreduce.cluster import EmbeddedCluster
from mapreduce.core.config import MasterConfig
from mapreduce.planning import JobOptions
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.web.server import status_token
from tests.conftest import JOBS, read_output

CONFIG = MasterConfig(worker_timeout=2.0, task_timeout=60.0, backup_after=1.0)
STALL_JOB = JOBS / "stall.py"
QUOTED = "lines with 'quote' or <tag>"  # the odd counter of stall.py
BAR_FILL = (0x3A, 0x7B, 0xD5)  # .fill of the progress bars in pages.py
BAR_WIDTH = 320  # px, .bar in pages.py

T = TypeVar("T")

# -- the browser ----------------------------------------------------------------------------


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed (bash scripts/check.sh installs it)")
    return path


def chromium(url: str, *args: str) -> str:
    """Run headless Chromium on ``url`` with ``args``; return its stdout (stderr is noise)."""
    with tempfile.TemporaryDirectory(
        prefix="mapreduce-chromium-", ignore_cleanup_errors=True
    ) as profile:
        env = {
            **os.environ,
            # Crash reports and caches go to the throwaway profile, not to ~/.config.
            "HOME": profile,
            "XDG_CONFIG_HOME": profile,
            "XDG_CACHE_HOME": profile,
        }
        process = subprocess.Popen(
            [
                chromium_path(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
                url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its helper processes go with it on a timeout
        )
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"chromium on {url} took more than 60 s")
        # Helpers (crashpad) may outlive the browser for a moment: end them before the
        # profile directory is removed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    text = stderr.decode("utf-8", "replace")
    assert process.returncode == 0, f"chromium exited {process.returncode}:\n{text[-3000:]}"
    return stdout.decode("utf-8")


class Dom(HTMLParser):
    """Text of elements with an ``id`` or ``data-counter``; rows of the tables with an id."""

    VOID = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
    )

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.counters: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._open: list[list[Any]] = []  # [target dict, key, depth, text parts]
        self._table: str | None = None
        self.feed(html)
        self.close()
        assert not self._open, "unbalanced DOM"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "table" and "id" in attributes:
            self._table = attributes["id"]
            self.tables[self._table] = []
        elif self._table is not None and tag == "tr":
            self.tables[self._table].append([])
        elif self._table is not None and tag in ("td", "th"):
            self.tables[self._table][-1].append("")
        if tag in self.VOID:
            return
        for capture in self._open:
            capture[2] += 1
        if "id" in attributes:
            self._open.append([self.by_id, attributes["id"], 1, []])
        if "data-counter" in attributes:
            self._open.append([self.counters, attributes["data-counter"], 1, []])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        if tag in self.VOID:
            return
        still_open = []
        for capture in self._open:
            capture[2] -= 1
            if capture[2] == 0:
                capture[0][capture[1]] = "".join(capture[3]).strip()
            else:
                still_open.append(capture)
        self._open = still_open

    def handle_data(self, data: str) -> None:
        for capture in self._open:
            capture[3].append(data)
        if self._table is not None and self.tables[self._table]:
            row = self.tables[self._table][-1]
            if row:
                row[-1] += data


def render(url: str) -> Dom:
    html = chromium(url, "--dump-dom")
    assert "</html>" in html, html[:2000]
    return Dom(html)


# -- the PNG of a screenshot, decoded far enough to find the progress bars ------------------


def png_rows(data: bytes, max_rows: int) -> tuple[int, int, list[bytes], int]:
    """``(width, height, the first max_rows rows of pixels, bytes per pixel)``."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    header: tuple[int, ...] = ()
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
    width, height, depth, color_type, _compression, _filter, interlace = header
    assert depth == 8 and color_type in (2, 6) and interlace == 0, header
    bpp = 3 if color_type == 2 else 4
    stride = width * bpp
    raw = zlib.decompressobj().decompress(idat, (stride + 1) * max_rows)
    rows: list[bytes] = []
    prior = bytearray(stride)
    for y in range(min(max_rows, height)):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = prior[i]
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                upper_left = prior[i - bpp] if i >= bpp else 0
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
                line[i] = (line[i] + best) & 0xFF
        rows.append(bytes(line))
        prior = line
    return width, height, rows, bpp


def bar_fills(rows: list[bytes], bpp: int) -> list[int]:
    """Widths (px) of the filled parts of the progress bars, top to bottom, in the given rows."""
    fills: list[int] = []
    previous = 0
    for row in rows:
        longest = run = 0
        for x in range(0, len(row), bpp):
            run = run + 1 if tuple(row[x : x + 3]) == BAR_FILL else 0
            longest = max(longest, run)
        if longest and not previous:
            fills.append(longest)
        previous = longest
    return fills


# -- HTTP -----------------------------------------------------------------------------------


def get(url: str, secret: bytes = b"") -> tuple[int, str, str]:
    """``(status, content type, body)``; with ``secret``, as a script sends it (bearer)."""
    headers = {"Authorization": f"Bearer {secret.decode()}"} if secret else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10
        ) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode("utf-8")


def get_json(url: str, secret: bytes) -> Any:
    status, content_type, body = get(url, secret)
    assert (status, content_type) == (200, "application/json"), (status, body)
    return json.loads(body)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')


def metrics(url: str, secret: bytes) -> list[tuple[str, dict[str, str], float]]:
    status, content_type, body = get(url, secret)
    assert status == 200 and content_type.startswith("text/plain"), (status, body)
    samples = []
    for line in body.splitlines():
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        labels = dict(_LABEL.findall(match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def sample(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> int:
    found = [v for n, ls, v in samples if n == name and ls == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    assert found[0] == int(found[0])
    return int(found[0])


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; last seen: {json.dumps(value, default=str)[:3000]}")
        time.sleep(0.1)


# -- the input, and what its counters must be -----------------------------------------------

INPUT = {
    "a.txt": "the quick brown fox\njumps over the lazy dog\n\nit's <b>bold</b>\n",
    "b.txt": "one\ntwo two\nthree three three\n",
    "c.txt": "don't panic\n" * 5,
    "stall.txt": "held still\nfor a while\n<then> it's done\n",
}


def expected_counters(names: list[str]) -> dict[str, int]:
    lines = [line for name in names for line in INPUT[name].splitlines()]
    counters = {
        "lines": len(lines),
        "words": sum(len(line.split()) for line in lines),
        QUOTED: sum("'" in line or "<" in line for line in lines),
    }
    return {name: n for name, n in sorted(counters.items()) if n}


def write_input(directory: Path) -> Path:
    directory.mkdir()
    for name, text in INPUT.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def check_page_agrees(
    dom: Dom,
    view: dict[str, Any],
    samples: list[tuple[str, dict[str, str], float]],
    job_id: str,
) -> None:
    """The rendered job page, /api/jobs/JOB and /metrics show the same numbers."""
    for kind, counts in (("map", view["maps"]), ("reduce", view["reduces"])):
        by_state = {
            state: sample(samples, "mapreduce_tasks", job=job_id, kind=kind, state=state)
            for state in ("idle", "in_progress", "completed")
        }
        assert int(dom.by_id[f"{kind}-done"]) == counts["completed"] == by_state["completed"]
        assert int(dom.by_id[f"{kind}-total"]) == counts["total"] == sum(by_state.values())
        assert {s: counts[s] for s in by_state} == by_state
    assert dom.by_id["job-state"] == view["state"]
    assert sample(samples, "mapreduce_jobs", state=view["state"]) == 1
    assert {name: int(value) for name, value in dom.counters.items()} == view["counters"]


# -- the tests ------------------------------------------------------------------------------


def test_job_page_in_a_browser_agrees_with_json_and_metrics(tmp_path: Path) -> None:
    chromium_path()
    inputs = write_input(tmp_path / "in")
    release = tmp_path / "release"
    out = tmp_path / "out"
    screenshot = tmp_path / "status.png"
    request = client.build_submission(
        JobOptions(
            job_path=str(STALL_JOB),
            inputs=(str(inputs),),
            output=str(out),
            num_reducers=2,
            params={"stall": "25", "release": str(release)},
            backup_tasks=False,
        ),
    )
    with EmbeddedCluster(2, CONFIG, http_port=0) as cluster:
        assert cluster.status_server is not None
        base = cluster.status_server.url.rstrip("/")
        secret = cluster.security.secret
        token = f"?token={status_token(secret)}"
        stub = cluster.connect()
        job_id = client.submit(stub, request)
        api, page = f"{base}/api/jobs/{job_id}", f"{base}/jobs/{job_id}"
        try:
            # Inputs are read in name order: map-00003 reads stall.txt and holds still; both
            # reduces start at once (every worker has a reduce slot) and wait for its output.
            held = ["completed"] * 3 + ["in_progress"] * 3  # map-00000 .. reduce-00001
            before = wait_until(
                lambda: get_json(api, secret), lambda v: [t["state"] for t in v["tasks"]] == held
            )
            dom = render(page + token)
            chromium(page + token, f"--screenshot={screenshot}", "--window-size=1280,1400")
            view = get_json(api, secret)
            samples = metrics(f"{base}/metrics", secret)
            after = get_json(api, secret)
        finally:
            release.touch()
        # Nothing moved while we looked: the page, the JSON and the metrics show one state.
        for snapshot in (before, after):
            assert [t["state"] for t in snapshot["tasks"]] == [t["state"] for t in view["tasks"]]
            assert snapshot["counters"] == view["counters"]
        assert view["state"] == "running"
        assert (view["maps"]["completed"], view["maps"]["total"]) == (3, 4)
        assert view["reduces"]["completed"] == 0
        assert view["counters"] == expected_counters(["a.txt", "b.txt", "c.txt"])
        check_page_agrees(dom, view, samples, job_id)
        assert sample(samples, "mapreduce_tasks", job=job_id, kind="map", state="in_progress") == 1
        assert sample(samples, "mapreduce_workers", state="alive") == 2

        data = screenshot.read_bytes()
        width, height, rows, bpp = png_rows(data, max_rows=400)
        assert (width, height) == (1280, 1400)
        assert len(data) > 20_000  # a page, not a blank image
        # The map bar is 3/4 full, the reduce bar empty (no fill drawn).
        assert bar_fills(rows, bpp) == [BAR_WIDTH * 3 // 4]

        summary = client.wait_for(stub, job_id)
        view = get_json(api, secret)
        dom = render(page + token)
        samples = metrics(f"{base}/metrics", secret)

    everything = expected_counters(list(INPUT))
    assert summary["counters"] == everything
    assert view["state"] == "succeeded"
    assert view["counters"] == everything
    assert (view["maps"]["completed"], view["maps"]["total"]) == (4, 4)
    assert (view["reduces"]["completed"], view["reduces"]["total"]) == (2, 2)
    check_page_agrees(dom, view, samples, job_id)
    assert sample(samples, "mapreduce_jobs", state="running") == 0
    assert view["records"]["input"] == everything["lines"]
    words = Counter(w for text in INPUT.values() for w in text.split())
    assert sorted(read_output(out)) == sorted(f"{w}\t{n}" for w, n in words.items())


def connectable(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def test_cluster_page_lists_workers_and_jobs_and_a_lost_worker(tmp_path: Path) -> None:
    chromium_path()
    inputs = write_input(tmp_path / "in")
    request = client.build_submission(
        JobOptions(
            job_path=str(STALL_JOB),
            inputs=(str(inputs),),
            output=str(tmp_path / "out"),
            num_reducers=2,
            params={"stall": "0"},
        )
    )
    with EmbeddedCluster(2, CONFIG, http_port=0) as cluster:
        assert cluster.status_server is not None
        base = cluster.status_server.url.rstrip("/")
        secret = cluster.security.secret
        token = f"?token={status_token(secret)}"
        stub = cluster.connect()
        job_id = client.submit(stub, request)
        client.wait_for(stub, job_id)

        # Both alive: waited for, not assumed at once, since a busy machine may delay a
        # heartbeat past the 2 s worker timeout (the worker then registers again).
        overview = wait_until(
            lambda: get_json(f"{base}/api/cluster", secret),
            lambda o: [w["state"] for w in o["workers"]] == ["alive", "alive"],
        )
        workers = overview["workers"]
        addresses = sorted(w["address"] for w in workers)
        assert len(set(addresses)) == 2
        assert all(re.fullmatch(r"127\.0\.0\.1:\d+", a) and connectable(a) for a in addresses)
        assert sum(w["tasks_done"] for w in workers) >= 4 + 2  # more if a map ran again
        assert [(j["id"], j["state"]) for j in overview["jobs"]] == [(job_id, "succeeded")]
        grpc_status = stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=10)
        assert sorted(w.address for w in grpc_status.workers) == addresses
        assert [j["id"] for j in get_json(f"{base}/api/jobs", secret)] == [job_id]

        dom = render(base + "/" + token)
        assert dom.by_id["workers-alive"] == "2"
        rows = {row[1]: row for row in dom.tables["workers"][1:]}  # by address
        assert sorted(rows) == addresses
        assert all(row[2] == "alive" for row in rows.values())
        jobs = dom.tables["jobs"][1:]
        assert [(row[0], row[1], row[2], row[3], row[4]) for row in jobs] == [
            (job_id, "succeeded", "stall.py", "4/4", "2/2")
        ]

        victim = cluster.processes[0]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        # reaped: EmbeddedCluster.close() must not signal its id again (it may be reused)
        cluster.processes.remove(victim)
        overview = wait_until(
            lambda: get_json(f"{base}/api/cluster", secret),
            lambda o: any(w["state"] == "lost" for w in o["workers"]),
            timeout=CONFIG.worker_timeout + 10,
        )
        samples = metrics(f"{base}/metrics", secret)
        dom = render(base + "/" + token)

    states = {w["address"]: w["state"] for w in overview["workers"]}
    assert sorted(states) == addresses
    (lost,) = [a for a, s in states.items() if s == "lost"]
    (alive,) = [a for a, s in states.items() if s == "alive"]
    assert not connectable(lost)  # the killed process's shuffle address
    assert "heartbeat" in next(w["reason"] for w in overview["workers"] if w["address"] == lost)
    assert sample(samples, "mapreduce_workers", state="lost") == 1
    assert sample(samples, "mapreduce_workers", state="alive") == 1
    assert dom.by_id["workers-alive"] == "1"
    assert {row[1]: row[2] for row in dom.tables["workers"][1:]} == {lost: "lost", alive: "alive"}


def test_unknown_job_is_404_and_health_is_ok() -> None:
    with EmbeddedCluster(0, CONFIG, http_port=0) as cluster:
        assert cluster.status_server is not None
        base = cluster.status_server.url.rstrip("/")
        secret = cluster.security.secret
        assert get(f"{base}/health") == (200, "text/plain", "ok (leader)\n")
        for path in (
            "/jobs/no-such-job",
            "/api/jobs/no-such-job",
            "/api/jobs/no-such-job/tasks/map-00000/logs",
            "/jobs/no-such-job/tasks/map-00000",
            "/no/such/page",
        ):
            status, content_type, body = get(base + path, secret)
            assert (status, content_type) == (404, "text/plain"), (path, body)
            assert body.startswith("not found"), (path, body)
        assert sample(metrics(f"{base}/metrics", secret), "mapreduce_workers", state="alive") == 0


def test_pages_need_the_cluster_secret_and_a_browser_logs_in() -> None:
    with EmbeddedCluster(0, CONFIG, http_port=0) as cluster:
        assert cluster.status_server is not None
        base = cluster.status_server.url.rstrip("/")
        secret = cluster.security.secret
        assert get(f"{base}/health")[0] == 200  # open: for probes
        for path in ("/api/cluster", "/api/jobs", "/metrics"):
            assert get(base + path)[0] == 401, path
            assert get(base + path, b"wrong-secret-wrong-secret-wrong")[0] == 401, path
            assert get(base + path, secret)[0] == 200, path
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(f"{base}/jobs/none", timeout=10) as reply:  # sent to the log-in form
            assert reply.url == f"{base}/login" and "Cluster secret" in reply.read().decode()
        wrong = urllib.parse.urlencode({"secret": "nope"}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(f"{base}/login", data=wrong, timeout=10)
        assert refused.value.code == 401
        right = urllib.parse.urlencode({"secret": secret.decode()}).encode()
        with opener.open(f"{base}/login", data=right, timeout=10) as reply:  # cookie, then /
            assert reply.status == 200 and "workers" in reply.read().decode()
        with opener.open(f"{base}/api/cluster", timeout=10) as reply:
            assert json.loads(reply.read())["workers"] == []
        # a link with the token (what run prints) logs a new browser in, and leaks no secret
        fresh = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with fresh.open(cluster.status_server.login_url, timeout=10) as reply:
            assert reply.status == 200 and reply.url == f"{base}/"
        assert secret.decode() not in cluster.status_server.login_url
        with fresh.open(f"{base}/api/jobs", timeout=10) as reply:
            assert json.loads(reply.read()) == []


def test_the_embedded_status_page_binds_at_once_and_serves_from_its_first_visit() -> None:
    """The run's page (LazyStatusServer) holds its port from the start, makes the HTTP
    server only when visited, checks the secret as the master daemon's does, and stops
    cleanly whether it was visited or not."""
    import sys

    from mapreduce.master.driver import MasterDriver
    from mapreduce.web.listener import LazyStatusServer

    secret = b"s" * 64
    driver = MasterDriver(MasterConfig())
    driver.lead()
    unvisited = LazyStatusServer(driver, "127.0.0.1", 0, secret).start()
    with pytest.raises(OSError):  # the port is taken already
        socket.create_server(("127.0.0.1", unvisited.port))
    unvisited.stop()
    page = LazyStatusServer(driver, "127.0.0.1", 0, secret).start()
    try:
        assert page.login_url == f"{page.url}?token={status_token(secret)}"
        with urllib.request.urlopen(page.url + "health", timeout=10) as reply:
            assert reply.read() == b"ok (leader)\n"
        assert "mapreduce.web.server" in sys.modules
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(page.url + "api/cluster", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(
            page.url + "api/cluster", headers={"Authorization": f"Bearer {secret.decode()}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.loads(reply.read())["workers"] == []
    finally:
        page.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(page.url + "health", timeout=5)
