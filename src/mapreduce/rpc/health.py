"""The standard gRPC health service (``grpc.health.v1.Health``) on every server we run.

The master's server and each worker's shuffle server offer it, so orchestrators probe
them as they probe any gRPC service (``grpc_health_probe``, Kubernetes' ``grpc`` probes,
Docker health checks).  The overall status (service ``""``) and the server's own service
(``mapreduce.v1.Master`` or ``mapreduce.v1.Shuffle``) are ``NOT_SERVING`` until the
process is ready (the master: its state recovered and, among candidates, the leader;
a worker: registered with the master), ``SERVING`` then, and ``NOT_SERVING`` again from
the moment it begins to stop.  ``Check`` and ``Watch`` need no cluster secret
(:data:`mapreduce.rpc.security.OPEN_METHODS`); they tell nothing but these statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """The health statuses a synchronous gRPC server reports (:meth:`register` it)."""

    def __init__(self, services: Sequence[str]) -> None:
        self._services = ("", *services)
        self._servicer: Any = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(1, thread_name_prefix="health"),
        )
        self.set_serving(False)

    def register(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    def set_serving(self, serving: bool) -> None:
        for service in self._services:
            self._servicer.set(service, SERVING if serving else NOT_SERVING)


class AioHealth:
    """The same for a ``grpc.aio`` server; its methods run on the server's event loop."""

    def __init__(self, services: Sequence[str]) -> None:
        self._services = ("", *services)
        self._servicer: Any = health.aio.HealthServicer()

    async def register(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        await self.set_serving(False)

    async def set_serving(self, serving: bool) -> None:
        for service in self._services:
            await self._servicer.set(service, SERVING if serving else NOT_SERVING)
