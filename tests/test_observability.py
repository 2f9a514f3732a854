"""What orchestrators, Prometheus and log shippers see of the daemons: grpc.health.v1 on the
master and every worker, /metrics through prometheus-client, and --log-format json."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import mapreduce
from mapreduce.web.metrics import METRICS
from mapreduce.worker.shuffle import MapOutputRegistry, serve_shuffle
from tests.conftest import EXAMPLES, REPO, run_cli
from tests.daemons import Daemons, free_port, health


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    cluster = Daemons(tmp_path_factory.mktemp("daemons"), 2, "--log-format", "json")
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def job(daemons: Daemons, tmp_path_factory: pytest.TempPathFactory) -> mapreduce.RunResult:
    """Word count over 3 files (3 map tasks) with R = 2, on the daemons."""
    inputs = tmp_path_factory.mktemp("in")
    for i in range(3):
        (inputs / f"{i}.txt").write_text(f"to be or not to be {i}\n" * 50)
    return mapreduce.run(
        EXAMPLES / "wordcount.py",
        inputs,
        tmp_path_factory.mktemp("out") / "out",
        reducers=2,
        master=daemons.address,
        secret_file=str(daemons.secret),
    )


def test_a_health_probe_sees_serving_on_the_master_and_every_worker(daemons: Daemons) -> None:
    # as grpc_health_probe does: no secret, the overall status ("") and a named service
    assert health(daemons.address) == "SERVING"
    assert health(daemons.address, "mapreduce.v1.Master") == "SERVING"
    assert health(daemons.address, "no.such.Service") == "NOT_FOUND"
    workers = daemons.workers()
    assert len(workers) == 2
    for worker in workers:
        assert health(worker.address) == "SERVING"
        assert health(worker.address, "mapreduce.v1.Shuffle") == "SERVING"
    # the command the compose file's health checks run
    done = run_cli("health", workers[0].address, "--service", "mapreduce.v1.Shuffle")
    assert (done.returncode, done.stdout.strip()) == (0, f"{workers[0].address}: SERVING")
    nobody = f"127.0.0.1:{free_port()}"
    done = run_cli("health", nobody, "--timeout", "1", "--live")
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr, done.stderr


def readme_metrics() -> list[str]:
    """The metrics the README's table lists (rows starting with a metric's name)."""
    text = (REPO / "README.md").read_text()
    return re.findall(r"^\| `(mapreduce_[a-z_]+)(?:\{[a-z,]*\})?` \|", text, re.MULTILINE)


def test_metrics_parse_and_hold_every_metric_the_readme_lists(
    daemons: Daemons, job: mapreduce.RunResult
) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemons.http_port}/metrics",
        headers={"Authorization": f"Bearer {daemons.secret.read_text().strip()}"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        text = reply.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {s.name: s for f in families.values() for s in f.samples if not s.labels}
    listed = readme_metrics()
    assert sorted(listed) == sorted(METRICS)
    for name in listed:
        # a counter's family is named without its _total
        assert name in families or name.removesuffix("_total") in families, name
    assert families["mapreduce_task_duration_seconds"].type == "histogram"
    assert families["mapreduce_shuffle_fetch_seconds"].type == "histogram"
    assert families["mapreduce_shuffle_bytes"].type == "counter"

    def value(name: str, **labels: str) -> float:
        family = families[name.removesuffix("_bucket").removesuffix("_count")]
        found = [s.value for s in family.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    assert value("mapreduce_jobs", state="succeeded") == 1
    assert value("mapreduce_workers", state="alive") == 2
    assert value("mapreduce_tasks", job=job.job_id, kind="map", state="completed") == 3
    assert value("mapreduce_task_duration_seconds_count", kind="map") == 3
    assert value("mapreduce_task_duration_seconds_count", kind="reduce") == 2
    assert value("mapreduce_task_duration_seconds_bucket", kind="map", le="+Inf") == 3
    # every reducer fetched every map output at least once
    assert samples["mapreduce_shuffle_fetch_seconds_count"].value >= 3 * 2
    assert samples["mapreduce_shuffle_bytes_total"].value > 0


def test_daemons_log_one_json_object_a_line(
    daemons: Daemons, job: mapreduce.RunResult, tmp_path: Path
) -> None:
    fields = {"time", "level", "component", "job", "task", "attempt", "message"}
    master = [json.loads(line) for line in daemons.log(0).splitlines()]
    assert master and all(set(entry) == fields for entry in master)
    assert any(
        e["job"] == job.job_id and e["message"].startswith("job submitted") for e in master
    ), master
    assert any(e["job"] == job.job_id and e["message"].startswith("job committed") for e in master)
    # the start-up messages on stdout too
    out = (daemons.tmp_path / "master-0.out").read_text().splitlines()
    assert any(json.loads(line)["message"].startswith("master listening on") for line in out)
    attempts = []
    for i in (1, 2):
        for line in daemons.log(i).splitlines():
            entry = json.loads(line)
            assert set(entry) == fields
            if entry["job"] == job.job_id and entry["message"] == "attempt started":
                assert entry["component"] == "worker" and entry["level"] == "info"
                attempts.append((entry["task"], entry["attempt"]))
    assert {task for task, _attempt in attempts} == {
        "map-00000", "map-00001", "map-00002", "reduce-00000", "reduce-00001",
    }  # fmt: skip
    assert all(isinstance(attempt, int) for _task, attempt in attempts)


def test_a_shuffle_server_serves_only_between_ready_and_stopping(tmp_path: Path) -> None:
    server, port = serve_shuffle("127.0.0.1:0", MapOutputRegistry())
    address = f"127.0.0.1:{port}"
    try:
        # up, but its worker has not registered yet
        assert health(address) == "NOT_SERVING"
        assert health(address, "mapreduce.v1.Shuffle") == "NOT_SERVING"
        server.set_serving(True)
        assert health(address) == "SERVING"
        assert health(address, "mapreduce.v1.Shuffle") == "SERVING"
        server.set_serving(False)  # what Worker.stop() does first: draining
        assert health(address) == "NOT_SERVING"
    finally:
        server.stop()
    assert health(address) == "UNAVAILABLE"
