"""Output commit: nothing half-written is ever visible in the output directory.

A job's output is built in a hidden *staging* directory beside the output
(``.NAME.staging-JOBID``, on the same file system):

1. a reduce attempt writes ``staging/_temporary/part-NNNNN.attempt-A``;
2. committing the task renames it to ``staging/part-NNNNN`` (one rename, so
   exactly one attempt's file is ever there);
3. committing the job writes ``_summary.json`` then ``_SUCCESS`` into staging
   and renames staging to the output directory.

A job that fails, or a process that dies, leaves the output directory as it
was (absent, or the previous output under ``--overwrite``); only a hidden
staging directory may remain, which the next run of the same output removes.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from typing import Any

from mapreduce.errors import OutputExistsError, UsageError

SUCCESS_MARKER = "_SUCCESS"
SUMMARY_FILE = "_summary.json"


def part_name(partition: int) -> str:
    return f"part-{partition:05d}"


def _fsync(path: str) -> None:
    """Flush a file's or a directory's contents (a rename is durable once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputCommitter:
    """Stages, commits and aborts the output of one job.

    Args:
        output: the output directory the user asked for.
        job_id: the job's id (names the staging directory).
        overwrite: replace an existing output directory on success.
    """

    def __init__(self, output: str, job_id: str, *, overwrite: bool = False) -> None:
        self.output = os.path.abspath(output)
        self.overwrite = overwrite
        parent, name = os.path.split(self.output)
        self.parent = parent
        self.name = name
        self.staging = os.path.join(parent, f".{name}.staging-{job_id}")
        self.trash = os.path.join(parent, f".{name}.replaced-{job_id}")
        self.temporary = os.path.join(self.staging, "_temporary")

    def check(self) -> None:
        """Refuse an output that exists (without ``--overwrite``) or is not a directory.

        Raises:
            OutputExistsError: the output exists and overwrite is off.
            UsageError: the output path is an existing file.
        """
        if os.path.lexists(self.output):
            if not os.path.isdir(self.output):
                raise UsageError(f"--output {self.output} exists and is not a directory")
            if not self.overwrite:
                raise OutputExistsError(
                    f"output directory {self.output} already exists; "
                    "choose another --output or pass --overwrite to replace it"
                )

    def prepare(self) -> None:
        """Check the output and create an empty staging directory."""
        self.check()
        os.makedirs(self.parent, exist_ok=True)
        for stale in glob.glob(os.path.join(glob.escape(self.parent), f".{self.name}.staging-*")):
            shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(self.temporary)

    def attempt_path(self, partition: int, attempt: int) -> str:
        """Where reduce attempt ``attempt`` of ``partition`` writes its output."""
        return os.path.join(self.temporary, f"{part_name(partition)}.attempt-{attempt}")

    def commit_task(self, partition: int, attempt: int) -> str:
        """Make ``attempt``'s output the partition's output; return its committed path."""
        source = self.attempt_path(partition, attempt)
        target = os.path.join(self.staging, part_name(partition))
        _fsync(source)
        os.replace(source, target)
        return target

    def commit_job(self, summary: dict[str, Any]) -> None:
        """Write the summary and ``_SUCCESS``, then publish the output directory."""
        shutil.rmtree(self.temporary, ignore_errors=True)
        summary_path = os.path.join(self.staging, SUMMARY_FILE)
        with open(summary_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        with open(os.path.join(self.staging, SUCCESS_MARKER), "wb") as f:
            os.fsync(f.fileno())
        _fsync(self.staging)
        replaced = False
        if os.path.lexists(self.output):
            if not self.overwrite:
                raise OutputExistsError(
                    f"output directory {self.output} appeared while the job ran; "
                    f"the finished output is kept in {self.staging}"
                )
            os.replace(self.output, self.trash)
            replaced = True
        try:
            os.replace(self.staging, self.output)
        except OSError:
            if replaced:  # put the previous output back: never leave neither
                os.replace(self.trash, self.output)
            raise
        _fsync(self.parent)
        if replaced:
            shutil.rmtree(self.trash, ignore_errors=True)

    def abort(self) -> None:
        """Remove everything staged; the output directory is left as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)
