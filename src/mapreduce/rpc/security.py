"""The cluster secret on every gRPC call: one place makes every channel and checks every call.

With a secret, every call a client, worker or master makes carries it in the
``x-mapreduce-secret`` metadata, and every server (the master's, each worker's
shuffle server) checks it in constant time before anything else happens: a call
without it is answered UNAUTHENTICATED; only the standard health checks
(:data:`OPEN_METHODS`) are answered without it.  Without a secret, channels and servers
are as before (for a cluster on one machine's loopback).

The secret travels as the calls do: in the clear unless TLS is on, so on a
network that others can read, use TLS too.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

SECRET_HEADER = "x-mapreduce-secret"

#: The only methods answered without the secret: the standard health checks, which
#: orchestrators' probes (grpc_health_probe, Kubernetes) call without custom metadata.
#: They tell whether a server is SERVING, nothing else.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


@dataclass(frozen=True)
class Security:
    """What guards the cluster's gRPC traffic.

    Attributes:
        secret: the cluster secret (empty: none).
        cert, key: this process's TLS certificate chain and private key (PEM): servers
            present them; clients present them to servers that demand mutual TLS.
        ca: the CA certificate (PEM) peers are verified with: clients check servers with
            it, and a server given it demands a client certificate it signed (mutual TLS).
    """

    secret: bytes = b""
    cert: bytes = b""
    key: bytes = b""
    ca: bytes = b""

    @property
    def tls(self) -> bool:
        return bool(self.ca or self.cert)

    def channel(self, address: str, options: list[tuple[str, Any]]) -> grpc.Channel:
        """A channel to ``address`` (TLS when configured) whose every call carries the secret."""
        if self.tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self.ca or None,
                private_key=self.key or None,
                certificate_chain=self.cert or None,
            )
            channel = grpc.secure_channel(address, credentials, options=options)
        else:
            channel = grpc.insecure_channel(_target(address), options=options)
        if self.secret:
            channel = grpc.intercept_channel(channel, _SendSecret(self.secret))
        return channel

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """A server's TLS credentials (mutual with a CA), or None without a certificate."""
        if not self.cert:
            return None
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca or None,
            require_client_auth=bool(self.ca),
        )

    def add_port(self, server: Any, listen: str) -> int:
        """Serve ``server`` (sync or aio) on ``listen``, over TLS when configured.

        Raises:
            OSError: the address cannot be bound.
        """
        credentials = self.server_credentials()
        if credentials is not None:
            port = int(server.add_secure_port(listen, credentials))
        else:
            port = int(server.add_insecure_port(listen))
        if port == 0:
            raise OSError(f"cannot listen on {listen}")
        return port

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        """What a server adds so that it refuses calls without the secret."""
        return [_CheckSecret(self.secret)] if self.secret else []

    def aio_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The same for a ``grpc.aio`` server."""
        return [_CheckSecretAio(self.secret)] if self.secret else []


def _target(address: str) -> str:
    """An insecure channel's target for ``address``: an IPv4 address and port as such
    (``ipv4:``), not through gRPC's DNS resolver, which makes the first call to an address
    it is given wait for its resolution (a few milliseconds, at times); names as given."""
    host, colon, port = address.rpartition(":")
    parts = host.split(".")
    ipv4 = len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts)
    return "ipv4:" + address if colon and port.isdigit() and ipv4 else address


class _SendSecret(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    def __init__(self, secret: bytes) -> None:
        self._metadata = (SECRET_HEADER, secret.decode("ascii", "replace"))

    def _with_secret(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._metadata]
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials,
            details.wait_for_ready, details.compression,
        )  # fmt: skip

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_secret(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_secret(details), request)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


_REFUSED = "the cluster secret is missing or wrong"


def _offered(details: Any) -> bytes:
    for key, value in details.invocation_metadata or ():
        if key == SECRET_HEADER:
            return value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)
    return b""


def _refusing(handler: Any, refuse: Callable[..., Any]) -> Any:
    """A handler of the same kind as ``handler`` that runs ``refuse``."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class _CheckSecret(grpc.ServerInterceptor):
    """Answers UNAUTHENTICATED, before the servicer sees anything, to a call without the secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        if details.method in OPEN_METHODS or hmac.compare_digest(_offered(details), self._secret):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSED)

        return _refusing(handler, refuse)


class _CheckSecretAio(grpc.aio.ServerInterceptor):
    """:class:`_CheckSecret` for a ``grpc.aio`` server."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = await continuation(details)
        if (
            handler is None
            or details.method in OPEN_METHODS
            or hmac.compare_digest(_offered(details), self._secret)
        ):
            return handler

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSED)

        return _refusing(handler, refuse)
