"""The cluster secret: every RPC of every service refuses a call without it.

The services and their methods are enumerated from the generated descriptors, so an RPC
added later cannot be forgotten.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import mapreduce
from mapreduce.cluster import EmbeddedCluster
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc.security import OPEN_METHODS, Security
from tests.conftest import EXAMPLES, run_cli
from tests.daemons import free_port, kill_group, wait_until


def _call(channel: grpc.Channel, service: str, method: object) -> None:
    """Call ``method`` with an empty request; the reply (or stream) is read to the end."""
    path = f"/{service}/{method.name}"  # type: ignore[attr-defined]
    if method.server_streaming:  # type: ignore[attr-defined]
        for _ in channel.unary_stream(path)(b"", timeout=10):
            pass
    else:
        channel.unary_unary(path)(b"", timeout=10)


def _health_without_secret(channel: grpc.Channel, method: str) -> bool:
    """Whether Check, or the first answer of Watch, says SERVING (no secret sent)."""
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    if method == "Check":
        reply = stub.Check(request, timeout=10)
    else:
        stream = stub.Watch(request, timeout=10)
        reply = next(stream)
        stream.cancel()
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_every_rpc_without_the_secret_is_refused() -> None:
    with EmbeddedCluster(1) as cluster:
        stub = cluster.connect()

        def workers() -> list[pb.WorkerStatus]:
            return list(stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=30).workers)

        wait_until(lambda: len(workers()) == 1, "the worker to register")
        shuffle = workers()[0].address
        servers = {"Master": [cluster.address], "Shuffle": [shuffle]}
        assert set(servers) == set(pb.DESCRIPTOR.services_by_name)
        # every server also offers the standard health service
        servers["Health"] = [cluster.address, shuffle]
        assert set(health_pb2.DESCRIPTOR.services_by_name) == {"Health"}
        # The one exemption, spelled out: a wider one makes this test fail.
        assert {
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
        } == OPEN_METHODS
        services = [
            *pb.DESCRIPTOR.services_by_name.values(),
            health_pb2.DESCRIPTOR.services_by_name["Health"],
        ]
        refused: set[tuple[str, str]] = set()
        for service in services:
            assert service.methods, service.name
            for address in servers[service.name]:
                for wrong in (Security(), Security(b"not-the-secret-at-all-0000000000")):
                    channel = wrong.channel(address, convert.GRPC_OPTIONS)
                    for method in service.methods:
                        path = f"/{service.full_name}/{method.name}"
                        if path in OPEN_METHODS:
                            assert _health_without_secret(channel, method.name), path
                            continue
                        with pytest.raises(grpc.RpcError) as info:
                            _call(channel, service.full_name, method)
                        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, path
                        refused.add((address, path))
                    channel.close()
        # every other health method (List) is refused on both servers
        assert {(a, "/grpc.health.v1.Health/List") for a in servers["Health"]} <= refused
        # with it, the same channel kind gets through
        channel = cluster.security.channel(cluster.address, convert.GRPC_OPTIONS)
        reply = channel.unary_unary(
            "/mapreduce.v1.Master/GetClusterStatus",
            request_serializer=pb.GetClusterStatusRequest.SerializeToString,
            response_deserializer=pb.ClusterStatus.FromString,
        )(pb.GetClusterStatusRequest(), timeout=10)
        assert len(reply.workers) == 1


def test_serving_beyond_loopback_without_the_secret_is_refused(tmp_path: Path) -> None:
    for argv in (
        ["master", "--listen", "0.0.0.0:0", "--no-http"],
        ["worker", "--master", "127.0.0.1:1", "--listen", "0.0.0.0:0"],
    ):
        result = run_cli(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert "without the cluster secret" in result.stderr, result.stderr
    secret = tmp_path / "secret"
    assert run_cli("secret", secret).returncode == 0
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    assert run_cli("secret", secret).returncode == 2  # never overwrites a secret


def test_a_job_runs_over_mutual_tls_and_a_client_without_a_certificate_is_refused(
    tmp_path: Path,
) -> None:
    made = run_cli("certs", tmp_path / "tls", "--host", "127.0.0.1")
    assert made.returncode == 0, made.stderr
    ca, cert, key = (tmp_path / "tls" / name for name in ("ca.pem", "cert.pem", "key.pem"))
    assert key.stat().st_mode & 0o777 == 0o600
    assert run_cli("certs", tmp_path / "tls").returncode == 2  # never overwritten
    secret = tmp_path / "secret"
    assert run_cli("secret", secret).returncode == 0
    tls = ["--secret-file", str(secret), "--tls-ca", str(ca), "--tls-cert", str(cert),
           "--tls-key", str(key)]  # fmt: skip
    address, http = f"127.0.0.1:{free_port()}", free_port()
    master = subprocess.Popen(
        [sys.executable, "-m", "mapreduce", "master", "--listen", address,
         "--http-port", str(http), *tls],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    worker = None
    try:
        assert master.stdout is not None
        wait_until(lambda: "status page" in master.stdout.readline(), "the master")  # type: ignore[union-attr]
        worker = subprocess.Popen(
            [sys.executable, "-m", "mapreduce", "worker", "--master", address,
             "--workdir", str(tmp_path / "w"), *tls],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        inputs = tmp_path / "in"
        inputs.mkdir()
        (inputs / "a.txt").write_text("to be or not to be\n" * 100)
        done = run_cli(
            "submit", EXAMPLES / "wordcount.py", "-i", inputs, "-o", tmp_path / "out",
            "--master", address, "--wait", "-q", *tls,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        local = run_cli("run", EXAMPLES / "wordcount.py", "-i", inputs, "-o", tmp_path / "local",
                        "--local", "-q")  # fmt: skip
        assert local.returncode == 0
        assert (tmp_path / "out" / "part-00000").read_text() == (
            tmp_path / "local" / "part-00000"
        ).read_text()
        # the Python API takes the same options as keywords
        result = mapreduce.run(
            EXAMPLES / "wordcount.py", inputs, tmp_path / "api", master=address,
            secret_file=str(secret), tls_ca=str(ca), tls_cert=str(cert), tls_key=str(key),
        )  # fmt: skip
        assert list(result.records()) == list(mapreduce.read_output(tmp_path / "local"))
        # grpc_health_probe -tls -tls-ca-cert ... -tls-client-cert ...: no secret needed
        probe = run_cli("health", address, *tls[2:])
        assert probe.returncode == 0 and "SERVING" in probe.stdout, probe.stderr
        for partial in (
            ["--secret-file", str(secret), "--tls-ca", str(ca)],  # TLS, but no client certificate
            ["--secret-file", str(secret)],  # no TLS at all
        ):
            refused = subprocess.run(
                [sys.executable, "-m", "mapreduce", "status", "--master", address, *partial],
                capture_output=True,
                text=True,
                env={**os.environ, "MAPREDUCE_RETRY_SECONDS": "1"},
                timeout=60,
                check=False,
            )
            assert refused.returncode == 1, (partial, refused.stdout)
            assert "cannot reach the master" in refused.stderr
        # the status page is HTTPS with the master's certificate
        context = ssl.create_default_context(cafile=str(ca))
        request = urllib.request.Request(
            f"https://127.0.0.1:{http}/api/cluster",
            headers={"Authorization": f"Bearer {secret.read_text().strip()}"},
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as reply:
            assert reply.status == 200
    finally:
        for process in (worker, master):
            if process is not None:
                kill_group(process)  # type: ignore[arg-type]
