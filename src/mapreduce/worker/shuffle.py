"""The shuffle: workers serve their map output partitions; reducers fetch them.

A worker registers each completed map attempt's directory; the Shuffle
service streams ``part-NNNNN.run`` of a registered attempt in checksummed
chunks.  Clients name an attempt by ids, never by path, so nothing outside
the registered directories can be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
import zlib
from concurrent import futures
from typing import Any

import grpc
import grpc.aio

from mapreduce.dataflow.records import CorruptRunError, verify_run
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc._generated import mapreduce_pb2_grpc as pb_grpc
from mapreduce.rpc.health import AioHealth
from mapreduce.rpc.security import Security

MapOutputId = tuple[str, int, int]  # job, map index, map attempt

log = logging.getLogger("mapreduce.shuffle")


class FetchError(Exception):
    """A map output partition could not be fetched (unreachable, missing or corrupt)."""


class MapOutputRegistry:
    """Which map attempt's output lives in which local directory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: dict[MapOutputId, str] = {}

    def add(self, output: MapOutputId, directory: str) -> None:
        with self._lock:
            self._dirs[output] = directory

    def get(self, output: MapOutputId) -> str | None:
        with self._lock:
            return self._dirs.get(output)

    def drop_job(self, job_id: str) -> list[str]:
        """Forget a job's outputs; return their directories."""
        with self._lock:
            gone = [key for key in self._dirs if key[0] == job_id]
            return [self._dirs.pop(key) for key in gone]

    def outputs(self) -> list[MapOutputId]:
        """Every map output held, sorted."""
        with self._lock:
            return sorted(self._dirs)

    def clear(self) -> None:
        with self._lock:
            self._dirs.clear()


#: A stream whose client reads nothing for this long is ended (its slot freed).
IDLE_TIMEOUT = 30.0
#: Streams one client connection may have open at once; more are refused with
#: RESOURCE_EXHAUSTED (retried).  (Not HTTP/2's own stream limit: the client's streams
#: beyond it would wait behind the stalled ones, which the server cannot end.)
STREAMS_PER_CONNECTION = 16
#: Streams the server runs at once; more are refused with RESOURCE_EXHAUSTED (retried).
MAX_STREAMS = 256
#: Seconds a client connection lives (then the client reconnects); see ShuffleServer.
MAX_CONNECTION_AGE = 600.0


class ShuffleService(pb_grpc.ShuffleServicer):
    """Streams map output partitions, on an asyncio event loop: a stream that waits for a
    slow or stalled client costs no thread, so no client can starve the others.

    Args:
        registry: the map outputs this worker holds.
        idle_timeout: a stream whose client accepts no chunk for this long is ended.
        readers: the threads that read the files (the event loop never waits for a disk).
        streams_per_connection: streams one client connection may have at once.
    """

    def __init__(
        self,
        registry: MapOutputRegistry,
        idle_timeout: float,
        readers: futures.Executor,
        streams_per_connection: int = STREAMS_PER_CONNECTION,
    ) -> None:
        self.registry = registry
        self.idle_timeout = idle_timeout
        self.readers = readers
        self.streams_per_connection = streams_per_connection
        #: open streams by client connection (only the event loop's thread touches it)
        self._streams: dict[str, int] = {}

    async def FetchPartition(  # type: ignore[override]
        self, request: pb.FetchPartitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        peer = context.peer()
        if self._streams.get(peer, 0) >= self.streams_per_connection:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {self.streams_per_connection} fetches at once per connection",
            )
        self._streams[peer] = self._streams.get(peer, 0) + 1
        try:
            await self._send(request, context)
        finally:
            self._streams[peer] -= 1
            if not self._streams[peer]:
                del self._streams[peer]

    async def _send(
        self, request: pb.FetchPartitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        directory = self.registry.get((request.job_id, request.map_index, request.map_attempt))
        if directory is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no output of map {request.map_index} attempt {request.map_attempt} "
                f"of job {request.job_id[:100]!r} here",
            )
        path = os.path.join(directory, f"part-{request.partition:05d}.run")
        loop = asyncio.get_running_loop()
        try:
            f = await loop.run_in_executor(self.readers, open, path, "rb")
        except OSError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no partition {request.partition}")
        try:
            total = os.fstat(f.fileno()).st_size
            first = True
            while True:
                data = await loop.run_in_executor(self.readers, f.read, convert.CHUNK_BYTES)
                if not data and not first:
                    return
                chunk = pb.Chunk(data=data, crc32=zlib.crc32(data), total_size=total)
                try:
                    # Flow control: this waits while the client does not read.
                    await asyncio.wait_for(context.write(chunk), self.idle_timeout)
                except TimeoutError:
                    f.close()
                    log.warning(
                        "ended the fetch of map %d attempt %d partition %d of %s by %s: "
                        "the client read nothing for %g s",
                        request.map_index,
                        request.map_attempt,
                        request.partition,
                        request.job_id,
                        context.peer(),
                        self.idle_timeout,
                    )
                    # (The status goes out once the client reads or its connection closes:
                    # at the latest MAX_CONNECTION_AGE later; this stream costs no thread.)
                    await context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the client read nothing for {self.idle_timeout:g} s",
                    )
                first = False
                if not data:
                    return
        finally:
            f.close()


class ShuffleServer:
    """The Shuffle service's gRPC server, on an event loop in a thread of its own.

    Per client connection at most ``streams_per_connection`` streams run at once, at
    most ``max_streams`` in all (further ones are refused with RESOURCE_EXHAUSTED, which
    :func:`fetch_partition` retries), and a stream whose client reads nothing for
    ``idle_timeout`` ends.
    """

    def __init__(
        self,
        registry: MapOutputRegistry,
        idle_timeout: float = IDLE_TIMEOUT,
        max_streams: int = MAX_STREAMS,
        streams_per_connection: int = STREAMS_PER_CONNECTION,
        security: Security | None = None,
    ) -> None:
        self._registry = registry
        self._security = security or Security()
        self._idle_timeout = idle_timeout
        self._max_streams = max_streams
        self._streams_per_connection = streams_per_connection
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="shuffle-server", daemon=True
        )
        self._readers = futures.ThreadPoolExecutor(4, thread_name_prefix="shuffle-read")
        self._server: grpc.aio.Server | None = None
        self._health = AioHealth([pb.DESCRIPTOR.services_by_name["Shuffle"].full_name])

    def set_serving(self, serving: bool) -> None:
        """The ``grpc.health.v1`` status of this server: SERVING once its worker is ready."""
        if self._thread.is_alive():
            change = self._health.set_serving(serving)
            asyncio.run_coroutine_threadsafe(change, self._loop).result(timeout=10)

    def start(self, listen: str) -> int:
        """Serve on ``listen`` (port 0: any); return the port.

        Raises:
            OSError: the address cannot be bound.
        """
        self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self._start(listen), self._loop).result()
        except BaseException:
            self.stop()
            raise

    async def _start(self, listen: str) -> int:
        server = grpc.aio.server(
            options=[
                *convert.GRPC_OPTIONS,
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                # A client that stops reading keeps its streams (and their last chunk)
                # until its connection goes: connections are closed after this age, with
                # as much grace again for fetches under way (a fetch's deadline is shorter).
                ("grpc.max_connection_age_ms", int(MAX_CONNECTION_AGE * 1000)),
                ("grpc.max_connection_age_grace_ms", int(MAX_CONNECTION_AGE * 1000)),
            ],
            maximum_concurrent_rpcs=self._max_streams,
            interceptors=self._security.aio_interceptors(),
        )
        pb_grpc.add_ShuffleServicer_to_server(
            ShuffleService(
                self._registry, self._idle_timeout, self._readers, self._streams_per_connection
            ),
            server,
        )
        await self._health.register(server)
        port = self._security.add_port(server, listen)
        await server.start()
        self._server = server
        return port

    def stop(self, grace: float | None = None) -> None:
        """Stop serving (streams still running are ended after ``grace`` seconds)."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.set_serving(False)
        if self._server is not None:
            stopping = asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop)
            with contextlib.suppress(Exception):
                stopping.result(timeout=(grace or 0) + 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._readers.shutdown(wait=False, cancel_futures=True)


def serve_shuffle(
    listen: str,
    registry: MapOutputRegistry,
    idle_timeout: float = IDLE_TIMEOUT,
    security: Security | None = None,
) -> tuple[ShuffleServer, int]:
    """Start the Shuffle service on ``listen`` (port 0: any); return the server and its port.

    With ``security``'s secret, every call without it is refused (UNAUTHENTICATED).
    """
    server = ShuffleServer(registry, idle_timeout, security=security)
    return server, server.start(listen)


def fetch_partition(
    channel: grpc.Channel, output: MapOutputId, partition: int, dest: str, timeout: float = 300
) -> int:
    """Fetch one partition of a map output into ``dest`` (written atomically); return its size.

    A server that is busy (RESOURCE_EXHAUSTED: it runs as many streams as it may) is
    asked again, with a growing pause, until ``timeout``.

    Raises:
        FetchError: the peer is unreachable, does not have it, or sent corrupt data.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return _fetch_once(channel, output, partition, dest, deadline - time.monotonic())
        except grpc.RpcError as exc:
            map_index = output[1]
            if (
                exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                or time.monotonic() + delay > deadline
            ):
                raise FetchError(
                    f"fetching map {map_index} partition {partition}: {exc.code()}"
                ) from exc
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


def copy_partition(
    registry: MapOutputRegistry, output: MapOutputId, partition: int, dest: str
) -> int:
    """Fetch one partition of a map output that this worker holds itself: a hard link to
    (or, across file systems, a copy of) the file its shuffle service would stream,
    checked as a fetched one is (see :func:`fetch_partition`), without a call to that
    service.  Returns its size.

    Raises:
        FetchError: this worker does not hold it (any more), or it is corrupt.
    """
    job_id, map_index, map_attempt = output
    directory = registry.get(output)
    if directory is None:
        raise FetchError(f"no output of map {map_index} attempt {map_attempt} of {job_id} here")
    tmp = dest + ".fetching"
    try:
        source = os.path.join(directory, f"part-{partition:05d}.run")
        try:
            try:  # map outputs are never written again: a second name for the file will do
                os.link(source, tmp)
            except OSError:  # another file system, links not allowed (or no such file)
                shutil.copyfile(source, tmp)
        except FileNotFoundError as exc:
            raise FetchError(f"map {map_index}: no partition {partition}") from exc
        try:
            verify_run(tmp)  # corrupt on this worker's disk: re-run that map
        except CorruptRunError as exc:
            raise FetchError(f"map {map_index} partition {partition}: {exc}") from exc
        os.replace(tmp, dest)
        return os.path.getsize(dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fetch_once(
    channel: grpc.Channel, output: MapOutputId, partition: int, dest: str, timeout: float
) -> int:
    job_id, map_index, map_attempt = output
    stub = pb_grpc.ShuffleStub(channel)
    request = pb.FetchPartitionRequest(
        job_id=job_id, map_index=map_index, map_attempt=map_attempt, partition=partition
    )
    tmp = dest + ".fetching"
    size = 0
    total = -1
    try:
        with open(tmp, "wb") as f:
            for chunk in stub.FetchPartition(request, timeout=max(timeout, 0.001)):
                if zlib.crc32(chunk.data) != chunk.crc32:
                    raise FetchError(f"checksum mismatch in map {map_index} partition {partition}")
                if total < 0:
                    total = chunk.total_size
                f.write(chunk.data)
                size += len(chunk.data)
        if size != total:
            raise FetchError(f"map {map_index} partition {partition}: got {size} of {total} bytes")
        try:
            verify_run(tmp)  # corrupt on the map worker's disk: re-run that map
        except CorruptRunError as exc:
            raise FetchError(f"map {map_index} partition {partition}: {exc}") from exc
        os.replace(tmp, dest)
        return size
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
