"""The cluster secret: every RPC of every service refuses a call without it.

The services and their methods are enumerated from the generated descriptors, so an RPC
added later cannot be forgotten.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from mapreduce.cluster import EmbeddedCluster
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc.security import Security
from tests.conftest import run_cli
from tests.daemons import wait_until


def _call(channel: grpc.Channel, service: str, method: object) -> None:
    """Call ``method`` with an empty request; the reply (or stream) is read to the end."""
    path = f"/{service}/{method.name}"  # type: ignore[attr-defined]
    if method.server_streaming:  # type: ignore[attr-defined]
        for _ in channel.unary_stream(path)(b"", timeout=10):
            pass
    else:
        channel.unary_unary(path)(b"", timeout=10)


def test_every_rpc_without_the_secret_is_refused() -> None:
    with EmbeddedCluster(1) as cluster:
        stub = cluster.connect()

        def workers() -> list[pb.WorkerStatus]:
            return list(stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=30).workers)

        wait_until(lambda: len(workers()) == 1, "the worker to register")
        shuffle = workers()[0].address
        servers = {"Master": cluster.address, "Shuffle": shuffle}
        assert set(servers) == set(pb.DESCRIPTOR.services_by_name)
        for name, service in pb.DESCRIPTOR.services_by_name.items():
            assert service.methods, name
            for wrong in (Security(), Security(b"not-the-secret-at-all-0000000000")):
                channel = wrong.channel(servers[name], convert.GRPC_OPTIONS)
                for method in service.methods:
                    with pytest.raises(grpc.RpcError) as info:
                        _call(channel, service.full_name, method)
                    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, method.name
                channel.close()
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
