"""The shuffle over a real gRPC server: chunked transfer, checksums, unknown outputs."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from mapreduce.dataflow.records import read_run, write_run
from mapreduce.worker.shuffle import (
    FetchError,
    MapOutputRegistry,
    copy_partition,
    fetch_partition,
    serve_shuffle,
)


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    registry = MapOutputRegistry()
    server, port = serve_shuffle("127.0.0.1:0", registry)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield registry, channel
    channel.close()
    server.stop(grace=None)


def make_output(directory: Path, groups: int = 80_000) -> Path:
    directory.mkdir()
    write_run(
        str(directory / "part-00000.run"), [(f"k{i:06d}".encode(), [i]) for i in range(groups)]
    )
    return directory


def test_fetch_round_trip_in_chunks(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry, channel = served
    directory = make_output(tmp_path / "map")
    registry.add(("job", 3, 1), str(directory))
    dest = tmp_path / "fetched.run"
    size = fetch_partition(channel, ("job", 3, 1), 0, str(dest))
    original = (directory / "part-00000.run").read_bytes()
    assert size == len(original) > 1 << 20  # more than one chunk
    assert dest.read_bytes() == original
    assert sum(1 for _ in read_run(str(dest))) == 80_000


def test_a_corrupt_map_output_is_a_fetch_failure(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry, channel = served
    directory = make_output(tmp_path / "map", groups=1000)
    run = directory / "part-00000.run"
    data = bytearray(run.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a bit flip on the map worker's disk
    run.write_bytes(bytes(data))
    registry.add(("job", 0, 0), str(directory))
    dest = tmp_path / "fetched.run"
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_partition(channel, ("job", 0, 0), 0, str(dest))
    assert not dest.exists() and not Path(str(dest) + ".fetching").exists()


def test_unknown_outputs_and_partitions_are_not_served(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry, channel = served
    registry.add(("job", 0, 0), str(make_output(tmp_path / "map", groups=10)))
    for output, partition in [(("job", 0, 1), 0), (("other", 0, 0), 0), (("job", 0, 0), 7)]:
        with pytest.raises(FetchError, match="NOT_FOUND"):
            fetch_partition(channel, output, partition, str(tmp_path / "x.run"))


def test_a_reducer_copies_its_own_workers_outputs_checked_as_fetched_ones(
    tmp_path: Path,
) -> None:
    registry = MapOutputRegistry()
    directory = make_output(tmp_path / "map", groups=1000)
    registry.add(("job", 0, 0), str(directory))
    dest = tmp_path / "copied.run"
    size = copy_partition(registry, ("job", 0, 0), 0, str(dest))
    assert dest.read_bytes() == (directory / "part-00000.run").read_bytes()
    assert size == dest.stat().st_size
    for output, partition in [(("job", 0, 1), 0), (("other", 0, 0), 0), (("job", 0, 0), 7)]:
        with pytest.raises(FetchError):
            copy_partition(registry, output, partition, str(tmp_path / "x.run"))
    run = directory / "part-00000.run"
    data = bytearray(run.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a bit flip on this worker's disk
    run.write_bytes(bytes(data))
    dest.unlink()
    with pytest.raises(FetchError):
        copy_partition(registry, ("job", 0, 0), 0, str(dest))
    assert not dest.exists() and not Path(str(dest) + ".fetching").exists()
