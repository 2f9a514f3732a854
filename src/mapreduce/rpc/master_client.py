"""``MasterClient``: a Master stub that follows the leader among master candidates."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import grpc

from mapreduce.errors import UsageError
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2_grpc as pb_grpc
from mapreduce.rpc.security import Security

#: Answers that send a client to another candidate.
_FOLLOW = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

_LEADER_HINT = re.compile(r"the leader is at (\S+)")


class MasterClient:
    """A Master stub that follows the leader among master candidates.

    ``MasterClient("h1:7070,h2:7070,h3:7070").GetJobStatus(request, timeout=...)``
    calls the candidate believed to lead; one that answers UNAVAILABLE (a follower
    naming the leader, or a dead one) or does not answer in time (a paused one)
    makes it try the named leader, else the next address, each once; then the
    error is raised (:func:`mapreduce.client.call` and the workers retry).  With
    several addresses one try waits at most ``try_timeout`` seconds.
    """

    def __init__(
        self,
        addresses: str | list[str],
        security: Security | None = None,
        try_timeout: float = 2.0,
    ) -> None:
        if isinstance(addresses, str):
            addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        if not addresses:
            raise UsageError("--master needs at least one HOST:PORT")
        self.addresses = list(addresses)
        self.current = self.addresses[0]
        self.try_timeout = try_timeout
        self.security = security or Security()
        self._stubs: dict[str, pb_grpc.MasterStub] = {}
        self._lock = threading.Lock()

    def _stub(self, address: str) -> pb_grpc.MasterStub:
        with self._lock:
            stub = self._stubs.get(address)
            if stub is None:
                channel = self.security.channel(address, convert.GRPC_OPTIONS)
                stub = self._stubs[address] = pb_grpc.MasterStub(channel)
            return stub

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if not method[:1].isupper():
            raise AttributeError(method)

        def invoke(request: Any, timeout: float | None = None) -> Any:
            tried: set[str] = set()
            address = self.current
            if len(self.addresses) > 1:
                timeout = self.try_timeout if timeout is None else min(timeout, self.try_timeout)
            while True:
                try:
                    reply = getattr(self._stub(address), method)(request, timeout=timeout)
                except grpc.RpcError as exc:
                    if exc.code() not in _FOLLOW or len(self.addresses) == 1:
                        raise
                    tried.add(address)
                    hint = _LEADER_HINT.search(exc.details() or "")
                    untried = [a for a in self.addresses if a not in tried]
                    if hint and hint.group(1) not in tried:
                        address = hint.group(1)
                    elif untried:
                        address = untried[0]
                    else:
                        raise
                    continue
                if getattr(reply, "role", "") == "follower" and len(self.addresses) > 1:
                    # A candidate that is not the leader answered the cluster status
                    # itself (asked alone, it says so on purpose): go to the leader.
                    tried.add(address)
                    leader = getattr(reply, "leader", "")
                    untried = [a for a in self.addresses if a not in tried]
                    if leader and leader not in tried:
                        address = leader
                        continue
                    if untried:
                        address = untried[0]
                        continue
                self.current = address
                return reply

        return invoke
