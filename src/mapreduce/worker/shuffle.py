"""The shuffle: workers serve their map output partitions; reducers fetch them.

A worker registers each completed map attempt's directory; the Shuffle
service streams ``part-NNNNN.run`` of a registered attempt in checksummed
chunks.  Clients name an attempt by ids, never by path, so nothing outside
the registered directories can be read.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator

import grpc

from mapreduce.dataflow.records import CorruptRunError, verify_run
from mapreduce.rpc import convert
from mapreduce.rpc._generated import mapreduce_pb2 as pb
from mapreduce.rpc._generated import mapreduce_pb2_grpc as pb_grpc
from mapreduce.rpc.security import Security

MapOutputId = tuple[str, int, int]  # job, map index, map attempt


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


class ShuffleService(pb_grpc.ShuffleServicer):
    def __init__(self, registry: MapOutputRegistry) -> None:
        self.registry = registry

    def FetchPartition(
        self, request: pb.FetchPartitionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Chunk]:
        directory = self.registry.get((request.job_id, request.map_index, request.map_attempt))
        if directory is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no output of map {request.map_index} attempt {request.map_attempt} "
                f"of job {request.job_id!r} here",
            )
        path = os.path.join(directory, f"part-{request.partition:05d}.run")
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below, across yields)
        except OSError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no partition {request.partition}")
        with f:
            total = os.fstat(f.fileno()).st_size
            first = True
            while True:
                data = f.read(convert.CHUNK_BYTES)
                if not data and not first:
                    return
                yield pb.Chunk(data=data, crc32=zlib.crc32(data), total_size=total)
                first = False
                if not data:
                    return


def serve_shuffle(
    listen: str,
    registry: MapOutputRegistry,
    max_workers: int = 8,
    security: Security | None = None,
) -> tuple[grpc.Server, int]:
    """Start the Shuffle service on ``listen`` (port 0: any); return the server and its port."""
    return convert.start_grpc_server(
        listen,
        lambda server: pb_grpc.add_ShuffleServicer_to_server(ShuffleService(registry), server),
        max_workers,
        "shuffle",
        security,
    )


def fetch_partition(
    channel: grpc.Channel, output: MapOutputId, partition: int, dest: str, timeout: float = 300
) -> int:
    """Fetch one partition of a map output into ``dest`` (written atomically); return its size.

    Raises:
        FetchError: the peer is unreachable, does not have it, or sent corrupt data.
    """
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
            for chunk in stub.FetchPartition(request, timeout=timeout):
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
    except grpc.RpcError as exc:
        raise FetchError(f"fetching map {map_index} partition {partition}: {exc.code()}") from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
