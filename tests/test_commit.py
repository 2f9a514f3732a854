"""Output commit: a job's staging directory is its own while it runs, a leftover once it died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mapreduce.dataflow.commit import OutputCommitter
from mapreduce.errors import OutputBusyError, OutputError

_HOLDER = """
import sys, time
from mapreduce.dataflow.commit import OutputCommitter
committer = OutputCommitter(sys.argv[1], "job-a")
committer.prepare()
open(committer.attempt_path(0, 0), "w").write("half done\\n")
print("ready", flush=True)
time.sleep(60)
"""


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_job_running_in_another_process_is_refused_not_destroyed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        with pytest.raises(OutputBusyError, match="being written by another running job"):
            OutputCommitter(str(out), "job-b", overwrite=True).prepare()
        staged = tmp_path / ".out.staging-job-a" / "_temporary" / "part-00000.attempt-0"
        assert staged.read_text() == "half done\n"  # untouched
        assert _hidden(tmp_path) == [".out.staging-job-a", ".out.staging-job-a.lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # dead now: its staging directory is a leftover, removed by the next job
    second = OutputCommitter(str(out), "job-b")
    second.prepare()
    assert _hidden(tmp_path) == [".out.staging-job-b", ".out.staging-job-b.lock"]
    Path(second.attempt_path(0, 0)).write_text("x\n")
    second.commit_task(0, 0)
    second.commit_job({"job": "b"}, 1)
    assert _hidden(tmp_path) == []
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_summary.json", "part-00000"]


def test_commit_and_abort_let_go_of_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = OutputCommitter(str(out), "job-1")
    first.prepare()
    with pytest.raises(OutputBusyError):
        OutputCommitter(str(out), "job-2").prepare()  # same process, another job
    first.abort()
    assert _hidden(tmp_path) == []
    second = OutputCommitter(str(out), "job-2")
    second.prepare()
    second.commit_job({}, 0)
    third = OutputCommitter(str(out), "job-3", overwrite=True)
    third.prepare()
    third.commit_job({}, 0)
    assert _hidden(tmp_path) == []
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_summary.json"]


def test_a_leftover_lock_file_alone_is_removed(tmp_path: Path) -> None:
    (tmp_path / ".out.staging-job-old.lock").write_text("")
    (tmp_path / ".out.staging-job-older").mkdir()
    committer = OutputCommitter(str(tmp_path / "out"), "job-new")
    committer.prepare()
    assert _hidden(tmp_path) == [".out.staging-job-new", ".out.staging-job-new.lock"]
    committer.abort()


def test_a_restarted_master_resumes_staging_and_commits_once(tmp_path: Path) -> None:
    """After a master restart: committed parts are kept, a missing part refuses the commit,
    and committing a job whose output was already published does nothing."""
    out = tmp_path / "out"
    first = OutputCommitter(str(out), "job-1")
    first.prepare()
    Path(first.attempt_path(0, 0)).write_text("zero\n")
    first.commit_task(0, 0)
    first._release()  # the master process died: the kernel lets go of its lock
    again = OutputCommitter(str(out), "job-1")
    again.resume()
    with pytest.raises(OutputError, match="part-00001"):
        again.commit_job({"job_id": "job-1"}, 2)
    assert not out.exists()
    again.resume()
    Path(again.attempt_path(1, 3)).write_text("one\n")
    again.commit_task(1, 3)
    again.commit_job({"job_id": "job-1"}, 2)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_summary.json", "part-00000", "part-00001"]
    # the master died after publishing, before it recorded the commit: committing again is a no-op
    third = OutputCommitter(str(out), "job-1")
    third.resume()
    assert third.committed()
    third.commit_job({"job_id": "job-1"}, 2)
    assert (out / "part-00000").read_text() == "zero\n"
    assert _hidden(tmp_path) == []


def test_a_late_attempt_writing_into_temporary_is_never_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed reduce attempt still running may write into _temporary after the job commit
    emptied it (found by scripts/chaos.py): the published output never holds it."""
    import mapreduce.dataflow.commit as commit

    out = tmp_path / "out"
    committer = OutputCommitter(str(out), "job-1")
    committer.prepare()
    Path(committer.attempt_path(0, 2)).write_text("winner\n")
    committer.commit_task(0, 2)
    real_rmtree = commit.shutil.rmtree
    late = Path(committer.attempt_path(0, 1))

    def rmtree_then_a_late_write(path: str, **kwargs: object) -> None:
        real_rmtree(path, **kwargs)  # type: ignore[arg-type]
        if path == committer.temporary and not late.exists():
            late.parent.mkdir(parents=True, exist_ok=True)
            late.write_text("loser\n")  # the losing attempt, a moment too late

    monkeypatch.setattr(commit.shutil, "rmtree", rmtree_then_a_late_write)
    committer.commit_job({"job_id": "job-1"}, 1)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_summary.json", "part-00000"]
