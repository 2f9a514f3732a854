"""Static checks of the Dockerfile and docker-compose.yml (no Docker engine runs here).

The commands the compose file gives the containers are parsed by the real
``mapreduce`` argument parser, so a renamed or misspelled flag fails here.
"""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from mapreduce.cli import build_parser
from mapreduce.worker.agent import advertised_address
from tests.conftest import REPO


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def container_argv(service: dict[str, Any]) -> list[str]:
    """The mapreduce arguments a service's container runs with."""
    command = service["command"]
    if service.get("entrypoint") == ["sh", "-c"]:
        words = shlex.split(command[0].replace("$$", "$"))
        assert words[:2] == ["exec", "mapreduce"], words
        return words[2:]
    return list(command)


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    lines = [
        line.strip()
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0].startswith("FROM python:3.11")
    assert any("pip install" in line and " ." in line for line in lines)
    assert 'ENTRYPOINT ["mapreduce"]' in lines
    copied = [line.split()[1] for line in lines if line.startswith("COPY")]
    for path in copied:
        assert (REPO / path).exists(), f"the Dockerfile copies {path}, which does not exist"
    assert (REPO / "src" / "mapreduce").is_dir() and "src" in copied


def test_compose_runs_three_master_candidates_that_know_each_other() -> None:
    services = compose()["services"]
    candidates = ["master-1", "master-2", "master-3"]
    assert set(services) == {*candidates, "worker"}
    parser = build_parser()
    rafts = {}
    for name in candidates:
        service = services[name]
        master = parser.parse_args(container_argv(service))
        assert master.command == "master" and master.listen == "0.0.0.0:7070"
        assert service["hostname"] == name  # the address the leader announces to clients
        assert master.raft == f"{name}:7090" and master.state_dir == "/state"
        assert f"{name}:/state" in service["volumes"]  # a journal of its own
        assert "mapreduce_secret" in service["secrets"]  # mandatory with --peers
        assert service["environment"]["MAPREDUCE_SECRET_FILE"] == "/run/secrets/mapreduce_secret"
        published = [p.split(":")[-1] for p in service["ports"]]
        assert str(master.http_port) in published
        rafts[name] = set(master.peers.split(","))
    for name in candidates:  # each lists the two others
        assert rafts[name] == {f"{other}:7090" for other in candidates if other != name}
    assert compose()["secrets"]["mapreduce_secret"]["file"] == "./secret"
    worker = parser.parse_args(container_argv(services["worker"]))
    assert worker.command == "worker"
    assert worker.master == ",".join(f"{name}:7070" for name in candidates)
    # it listens on every interface: it must have the secret (refused without)
    assert "mapreduce_secret" in services["worker"]["secrets"]
    secret_file = services["worker"]["environment"]["MAPREDUCE_SECRET_FILE"]
    assert secret_file == "/run/secrets/mapreduce_secret"
    assert worker.listen.startswith("0.0.0.0:")
    assert worker.advertise == "$(hostname -i)"  # expanded by the container's shell


def test_every_service_sees_the_shared_data_directory() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert "./data:/data" in service["volumes"], name
        assert service["image"] == services["worker"]["image"], name


def test_workers_listening_on_every_interface_advertise_a_reachable_host() -> None:
    assert advertised_address("0.0.0.0:0", 7080, "10.1.2.3") == "10.1.2.3:7080"
    assert advertised_address("127.0.0.1:0", 7080) == "127.0.0.1:7080"
    host, port = advertised_address("0.0.0.0:0", 7080).rsplit(":", 1)
    assert host not in ("0.0.0.0", "") and port == "7080"


def test_health_checks_use_grpc_health_checking_on_each_service_port() -> None:
    services = compose()["services"]
    parser = build_parser()
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "mapreduce"], name
        check = parser.parse_args(test[2:])
        assert check.command == "health", name
        served = parser.parse_args(container_argv(service)).listen
        # the port the service listens on, asked on the container's own loopback
        assert check.address == "localhost:" + served.rsplit(":", 1)[1], name
        # candidates that follow are alive but NOT_SERVING: only --live keeps them healthy
        assert check.live == name.startswith("master-"), name
