"""Inputs and outputs on an object store (issue 14), against a real S3-protocol server.

A moto server runs as a subprocess (``tests/s3server.py``); every job here runs as a real
``mapreduce`` process (``--local``, the embedded cluster, or daemons) that talks S3 over
HTTP to it through s3fs.  Each test uses a bucket of its own.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mapreduce.core.spec import InputSplit, InvalidSpec, JobSpec
from mapreduce.dataflow import storage
from tests.conftest import EXAMPLES, GUTENBERG, JOBS, REPO
from tests.daemons import kill_group, wait_until
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server, s3_server

_buckets = itertools.count()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(log=tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"bucket-{os.getpid()}-{next(_buckets)}"
    s3.filesystem().mkdir(name)  # type: ignore[attr-defined]
    return name


def mapreduce(
    s3: S3Server, *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mapreduce", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env if env is not None else s3.env(),
        cwd=REPO,
    )


def upload(s3: S3Server, local: Path, url: str) -> None:
    fs: Any = s3.filesystem()
    for path in sorted(local.iterdir()):
        fs.put_file(str(path), url.removeprefix("s3://") + "/" + path.name)


def store_parts(s3: S3Server, url: str) -> dict[str, bytes]:
    fs: Any = s3.filesystem()
    prefix = url.removeprefix("s3://")
    return {
        name.rsplit("/", 1)[1]: fs.cat_file(name)
        for name in sorted(fs.find(prefix))
        if name.rsplit("/", 1)[1].startswith("part-")
    }


def store_names(s3: S3Server, url: str) -> list[str]:
    fs: Any = s3.filesystem()
    prefix = url.removeprefix("s3://")
    return sorted(name[len(prefix) + 1 :] for name in fs.find(prefix))


def local_parts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))}


def reference(
    s3: S3Server, tmp_path: Path, job: Path, inputs: Path, *extra: str
) -> dict[str, bytes]:
    out = tmp_path / f"local-{job.stem}"
    result = mapreduce(s3, "run", job, "-i", inputs, "-o", out, "--local", "-q", *extra)
    assert result.returncode == 0, result.stderr
    return local_parts(out)


def test_paper_examples_on_the_store_match_a_local_disk_run(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Word count, inverted index (``files``) and sort (sampled range partitioner): input
    and output on the store, on the embedded cluster, the output byte for byte the local
    disk's; the manifest lists every part with its size."""
    records = tmp_path / "records"
    generated = subprocess.run(
        [sys.executable, REPO.parent / "shared" / "bench" / "gen_records.py", records,
         "--records", "20000", "--files", "3"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    upload(s3, GUTENBERG, f"s3://{bucket}/gutenberg")
    upload(s3, records, f"s3://{bucket}/records")
    for job, inputs, store_input, extra in [
        ("wordcount.py", GUTENBERG, "gutenberg", ("-r", "3", "--split-size", "256K")),
        ("inverted_index.py", GUTENBERG, "gutenberg", ("-r", "2")),
        ("sort.py", records, "records", ("-r", "3", "--split-size", "300K")),
    ]:
        want = reference(s3, tmp_path, EXAMPLES / job, inputs, *extra)
        out = f"s3://{bucket}/out-{Path(job).stem}"
        run = mapreduce(
            s3, "run", EXAMPLES / job, "-i", f"s3://{bucket}/{store_input}", "-o", out,
            "--workers", "2", "-q", *extra,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert store_parts(s3, out) == want, job
        names = store_names(s3, out)
        assert names == ["_SUCCESS", "_summary.json", *sorted(want)], names
        manifest = json.loads(s3.filesystem().cat_file(out[5:] + "/_SUCCESS"))  # type: ignore[attr-defined]
        assert [(p["name"], p["size"]) for p in manifest["parts"]] == [
            (name, len(data)) for name, data in sorted(want.items())
        ]


def test_daemons_read_and_write_the_store_and_never_show_the_secret(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """A master and a worker daemon without any AWS variable; the credentials and endpoint
    come with ``submit --storage-option``.  The secret appears nowhere: not in the status
    JSON, the status page's API, ``_summary.json`` or the daemons' output."""
    upload(s3, GUTENBERG, f"s3://{bucket}/in")
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    bare.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    logs = tmp_path / "daemons.log"
    master = subprocess.Popen(
        [sys.executable, "-m", "mapreduce", "master", "--listen", "127.0.0.1:0",
         "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=logs.open("w"), text=True, env=bare,
        start_new_session=True,
    )  # fmt: skip
    worker = None
    try:
        assert master.stdout is not None
        address = master.stdout.readline().strip().rsplit(" ", 1)[-1]
        page = master.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert page.startswith("http://"), page
        worker = subprocess.Popen(
            [sys.executable, "-m", "mapreduce", "worker", "--master", address,
             "--workdir", str(tmp_path / "w")],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "worker.log").open("w"), env=bare,
            start_new_session=True,
        )  # fmt: skip
        out = f"s3://{bucket}/out"
        options = [
            "--storage-option", f"endpoint_url={s3.endpoint}",
            "--storage-option", f"key={ACCESS_KEY}",
            "--storage-option", f"secret={SECRET_KEY}",
        ]  # fmt: skip
        submitted = mapreduce(
            s3, "submit", EXAMPLES / "wordcount.py", "--master", address, "-i",
            f"s3://{bucket}/in", "-o", out, "-r", "2", "--wait", *options, env=bare,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.split()[0]
        want = reference(s3, tmp_path, EXAMPLES / "wordcount.py", GUTENBERG, "-r", "2")
        assert store_parts(s3, out) == want
        status = mapreduce(s3, "status", "--master", address, "--job", job_id, "--json", env=bare)
        assert status.returncode == 0, status.stderr
        with urllib.request.urlopen(f"{page.rstrip('/')}/api/jobs/{job_id}", timeout=30) as r:
            api = r.read().decode()
        with urllib.request.urlopen(page, timeout=30) as r:
            html = r.read().decode()
        summary = s3.filesystem().cat_file(f"{bucket}/out/_summary.json").decode()  # type: ignore[attr-defined]
        for text in (status.stdout, api, html, summary, submitted.stdout, submitted.stderr):
            assert SECRET_KEY not in text
        assert job_id in api
        # a second job for the same output is refused before it queues
        again = mapreduce(
            s3, "submit", EXAMPLES / "wordcount.py", "--master", address, "-i",
            f"s3://{bucket}/in", "-o", out, *options, env=bare,
        )  # fmt: skip
        assert again.returncode == 2 and "already exists" in again.stderr
    finally:
        if worker is not None:
            kill_group(worker)  # type: ignore[arg-type]
        kill_group(master)
    assert SECRET_KEY not in logs.read_text() + (tmp_path / "worker.log").read_text()


def test_compressed_inputs_and_a_manifest_that_names_exactly_the_parts(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """``.gz``, ``.bz2`` and ``.zst`` on the store give the plain file's counts; a job's
    output read as input gives exactly the parts its ``_SUCCESS`` lists (a stray object
    beside them is not read), and a part changed since is an error naming it."""
    text = (GUTENBERG / "pg-metamorphosis.txt").read_bytes()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "m.txt").write_bytes(text)
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "m.gz").write_bytes(gzip.compress(text))
    (packed / "m.bz2").write_bytes(bz2.compress(text))
    (packed / "m.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    upload(s3, packed, f"s3://{bucket}/packed")
    want = json.loads("{}")
    once = reference(s3, tmp_path, EXAMPLES / "wordcount.py", plain)
    for line in once["part-00000"].decode().splitlines():
        word, count = line.split("\t")
        want[word] = 3 * int(count)
    out = f"s3://{bucket}/counts"
    run = mapreduce(s3, "run", EXAMPLES / "wordcount.py", "-i", f"s3://{bucket}/packed",
                    "-o", out, "--local", "-q")  # fmt: skip
    assert run.returncode == 0, run.stderr
    got = dict(
        line.split("\t") for line in store_parts(s3, out)["part-00000"].decode().splitlines()
    )
    assert {w: int(c) for w, c in got.items()} == want
    # a glob pattern (the .gz is left out)
    globbed = f"s3://{bucket}/globbed"
    run = mapreduce(s3, "run", EXAMPLES / "wordcount.py", "-i", f"s3://{bucket}/packed/m.[bz]*",
                    "-o", globbed, "--local", "-q")  # fmt: skip
    assert run.returncode == 0, run.stderr
    got = dict(
        line.split("\t") for line in store_parts(s3, globbed)["part-00000"].decode().splitlines()
    )
    assert {w: int(c) for w, c in got.items()} == {w: c // 3 * 2 for w, c in want.items()}

    fs: Any = s3.filesystem()
    fs.pipe_file(f"{bucket}/counts/part-99999", b"stray\t1\n")  # not in the manifest
    again = f"s3://{bucket}/again"
    run = mapreduce(s3, "run", JOBS / "echo_records.py", "-i", out, "-o", again, "--local",
                    "-q", "--input-format", "tsv")  # fmt: skip
    assert run.returncode == 0, run.stderr
    echoed = store_parts(s3, again)["part-00000"].decode()
    assert '"stray"' not in echoed and len(echoed.splitlines()) == len(want)

    fs.pipe_file(f"{bucket}/counts/part-00000", b"changed\t1\n")
    changed = mapreduce(s3, "run", EXAMPLES / "wordcount.py", "-i", out, "-o",
                        f"s3://{bucket}/x", "--local", "-q")  # fmt: skip
    assert changed.returncode == 2
    assert "part-00000 differs from what its _SUCCESS lists" in changed.stderr


def test_jsonl_and_tsv_records_from_the_store_are_the_local_ones(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Every record of a ``jsonl`` and a ``tsv`` input read in splits of 100 bytes from the
    store (ranged reads) is the record read from local disk; keys name the URL."""
    data = tmp_path / "data"
    data.mkdir()
    lines = [json.dumps({"n": i, "text": "é" * (i % 7), "tab": "a\tb"}) for i in range(300)]
    (data / "records.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    (data / "pairs.tsv").write_text("".join(f"k{i}\tv{i}\r\n" for i in range(300)))
    upload(s3, data, f"s3://{bucket}/data")
    for name, fmt in (("records.jsonl", "jsonl"), ("pairs.tsv", "tsv")):
        got = f"s3://{bucket}/echo-{fmt}"
        extra = ("--input-format", fmt, "--split-size", "100", "-r", "2")
        run = mapreduce(s3, "run", JOBS / "echo_records.py", "-i", f"s3://{bucket}/data/{name}",
                        "-o", got, "--local", "-q", *extra)  # fmt: skip
        assert run.returncode == 0, run.stderr
        want = reference(s3, tmp_path, JOBS / "echo_records.py", data / name, *extra)
        local_key, url_key = json.dumps(str(data / name)), json.dumps(f"s3://{bucket}/data/{name}")
        lines_got = b"".join(store_parts(s3, got).values()).decode()
        lines_want = b"".join(want.values()).decode()
        assert sorted(lines_got.replace(url_key, local_key).splitlines()) == sorted(
            lines_want.splitlines()
        )
        assert len(lines_want.splitlines()) == 300
        (tmp_path / "local-echo_records").rename(tmp_path / f"local-{fmt}")


def test_a_job_killed_in_its_commit_leaves_no_success_and_the_next_run_cleans_up(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    upload(s3, GUTENBERG, f"s3://{bucket}/in")
    out = f"s3://{bucket}/out"
    args = ["run", EXAMPLES / "wordcount.py", "-i", f"s3://{bucket}/in", "-o", out, "-r", "4",
            "--local", "-q"]  # fmt: skip
    first = mapreduce(s3, *args)
    assert first.returncode == 0, first.stderr
    old = store_parts(s3, out)
    # --overwrite with a different R, killed (SIGKILL) once two new parts are in place
    killed = mapreduce(s3, *args[:-4], "-r", "3", "--local", "-q", "--overwrite",
                       env=s3.env(MAPREDUCE_KILL_IN_COMMIT="2"))  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    names = store_names(s3, out)
    assert "_SUCCESS" not in names, names
    assert any(name.startswith("_temporary/") for name in names)
    # the next run for that output (without --overwrite: what is there is no output) cleans up
    second = mapreduce(s3, *args[:-4], "-r", "3", "--local", "-q")
    assert second.returncode == 0, second.stderr
    assert store_names(s3, out) == ["_SUCCESS", "_summary.json", "part-00000", "part-00001",
                                    "part-00002"]  # fmt: skip
    assert store_parts(s3, out) == reference(
        s3, tmp_path, EXAMPLES / "wordcount.py", GUTENBERG, "-r", "3"
    )
    # --overwrite on the store: the new parts only, nothing of the old ones
    third = mapreduce(s3, *args, "--overwrite")
    assert third.returncode == 0, third.stderr
    assert store_parts(s3, out) == old
    assert store_names(s3, out) == ["_SUCCESS", "_summary.json", *sorted(old)]


def test_a_job_whose_output_is_being_written_is_refused(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    upload(s3, GUTENBERG, f"s3://{bucket}/in")
    out = f"s3://{bucket}/out"
    release = tmp_path / "release"
    held = subprocess.Popen(
        [sys.executable, "-m", "mapreduce", "run", str(JOBS / "hold_reduce.py"), "-i",
         f"s3://{bucket}/in", "-o", out, "--local", "-q", "-p", "key=the",
         "-p", f"release={release}", "-p", "stall=300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=s3.env(), cwd=REPO,
    )  # fmt: skip
    try:
        fs: Any = s3.filesystem()
        wait_until(
            lambda: any(n.endswith(".lock") for n in fs.find(f"{bucket}/out", refresh=True)),
            "the first job's lock object",
        )
        second = mapreduce(s3, "run", EXAMPLES / "wordcount.py", "-i", f"s3://{bucket}/in",
                           "-o", out, "--local", "-q", "--overwrite")  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert "is being written by another running job" in second.stderr
        release.touch()
        assert held.wait(timeout=300) == 0, held.communicate()[1]
    finally:
        release.touch()
        if held.poll() is None:
            held.kill()
        held.wait()
    assert store_names(s3, out) == ["_SUCCESS", "_summary.json", "part-00000"]


def test_missing_credentials_bucket_or_permission_are_clear_errors(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    upload(s3, GUTENBERG, f"s3://{bucket}/in")
    job = EXAMPLES / "wordcount.py"
    no_keys = {
        k: v for k, v in s3.env().items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    run = mapreduce(s3, "run", job, "-i", f"s3://{bucket}/in", "-o", tmp_path / "o", "--local",
                    env=no_keys)  # fmt: skip
    assert run.returncode == 2
    assert f"s3://{bucket}/in: no credentials for the store" in run.stderr

    run = mapreduce(s3, "run", job, "-i", "s3://no-such-bucket/in", "-o", tmp_path / "o",
                    "--local")  # fmt: skip
    assert run.returncode == 2
    assert "s3://no-such-bucket/in: the bucket does not exist" in run.stderr
    run = mapreduce(s3, "run", job, "-i", GUTENBERG, "-o", "s3://no-such-bucket/out", "--local")
    assert run.returncode == 2
    assert "s3://no-such-bucket/out: the bucket does not exist" in run.stderr
    assert not (tmp_path / "o").exists()

    run = mapreduce(s3, "run", job, "-i", f"s3://{bucket}/in", "-o", tmp_path / "o", "--local",
                    "--storage-option", "bogus=s3cr3t")  # fmt: skip
    assert run.returncode == 2
    assert f"s3://{bucket}/in: --storage-option bogus is not an option of s3://" in run.stderr
    assert "s3cr3t" not in run.stderr

    with s3_server(auth=True) as strict:  # knows no access key: denies every request
        run = mapreduce(strict, "run", job, "-i", GUTENBERG, "-o", "s3://b/out", "--local")
    assert run.returncode == 2
    assert "s3://b/out: access denied" in run.stderr
    assert SECRET_KEY not in run.stderr


def test_transient_errors_are_retried_and_lasting_ones_are_not() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return "done"

    assert storage.retried(flaky, sleep=lambda _s: None) == "done"
    assert len(calls) == 3

    def denied() -> None:
        calls.append(1)
        raise PermissionError("Access Denied")

    calls.clear()
    with pytest.raises(PermissionError):
        storage.retried(denied, sleep=lambda _s: None)
    assert len(calls) == 1
    assert storage.is_transient(OSError("An error occurred (SlowDown): Please reduce rate"))
    assert not storage.is_transient(FileNotFoundError("The specified bucket does not exist"))


def test_urls_are_normalised_and_checked() -> None:
    assert storage.normalize("S3://b/a//b/./c/") == "s3://b/a/b/c"
    assert storage.normalize("file:///tmp/x") == "/tmp/x"
    assert storage.normalize("/plain/path") == "/plain/path"
    with pytest.raises(Exception, match="credentials in a URL"):
        storage.normalize("s3://key:secret@bucket/x")
    with pytest.raises(Exception, match="not a usable URL"):
        storage.normalize("s3://bucket/a/../b")
    spec = JobSpec("job-1", "wc.py", output="s3://b/out",
                   splits=(InputSplit("s3://b/in/a.txt", 0, 10),))  # fmt: skip
    assert spec.validate() is spec
    for bad in ("s3://b", "s3://b/../x", "s3://b/in/a.txt"):
        with pytest.raises(InvalidSpec):
            JobSpec("job-1", "wc.py", output=bad,
                    splits=(InputSplit("s3://b/in/a.txt", 0, 10),)).validate()  # fmt: skip
    assert "s3cr3t" not in repr(JobSpec("j", "w.py", storage_options={"secret": "s3cr3t"}))


def test_the_python_api_takes_storage_options(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    """``mapreduce.run(..., storage_options={...})`` in this process, which has no AWS
    variable: the endpoint and the credentials come with the call."""
    import mapreduce as api

    upload(s3, GUTENBERG, f"s3://{bucket}/in")
    options = {"endpoint_url": s3.endpoint, "key": ACCESS_KEY, "secret": SECRET_KEY}
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
    try:
        result = api.run(
            EXAMPLES / "wordcount.py", f"s3://{bucket}/in", f"s3://{bucket}/out",
            local=True, reducers=2, storage_options=options,
        )  # fmt: skip
    finally:
        os.environ.update(saved)
    assert result.output == f"s3://{bucket}/out"
    assert store_parts(s3, f"s3://{bucket}/out") == reference(
        s3, tmp_path, EXAMPLES / "wordcount.py", GUTENBERG, "-r", "2"
    )
    assert SECRET_KEY not in json.dumps(result.summary) + repr(result)
    records = list(result.records())
    assert records == list(api.read_output(tmp_path / "local-wordcount"))
    assert records == list(api.read_output(f"s3://{bucket}/out", options))
