"""``JobSpec``: the one validated description of a job, from the CLI to every task.

``mapreduce run`` and ``mapreduce submit`` plan a job into a :class:`JobSpec`
(:func:`mapreduce.planning.plan_job`); it is sent to the master as it is, the
master's ``JobSubmitted`` event carries it whole (so the journal holds it), the
workers receive it (without the splits, which travel with each map task) and
the task runners read it.  Nothing converts it into another shape on the way.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass, field

#: Limits a spec must respect, so that no submission can exhaust the master.
MAX_REDUCERS = 100_000
MAX_SPLITS = 1_000_000
MAX_ATTEMPTS = 100
MAX_PARAMS_BYTES = 1 << 20
#: The largest job a master accepts unless told otherwise (``--max-maps``, ``--max-reducers``).
DEFAULT_MAX_MAPS = 200_000
DEFAULT_MAX_REDUCERS = 10_000
#: The longest name of a job file or a shipped file, and of an input path.
MAX_NAME = 255
MAX_PATH = 4096

#: How a job's input may be read (the readers are in :mod:`mapreduce.dataflow.formats`).
INPUT_FORMATS = frozenset({"lines", "files", "jsonl", "tsv"})

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Names a worker uses in its work directory beside the job directories (compared in
#: lower case, for case-insensitive file systems): no job may be called that.
RESERVED_JOB_IDS = frozenset({"logs"})


class InvalidSpec(ValueError):
    """A job spec breaks a rule; the message names the field."""


@dataclass(frozen=True)
class InputSplit:
    """A byte range ``[start, end)`` of one input file: the input of one map task.

    For unsplittable inputs (``.gz``, the ``files`` format) ``start`` is 0 and
    ``end`` is the file's size on disk.
    """

    path: str
    start: int
    end: int


@dataclass(frozen=True)
class JobSpec:
    """Everything about a job: its code, how its input is read, how it runs, where it writes.

    Attributes:
        job_id: the job's id (letters, digits, ``_.-``; names directories).
        job_file_name: the base name of the job file.
        input_format: ``lines``, ``files``, ``jsonl`` or ``tsv``.
        num_reducers: R, the number of reduce tasks and output files.
        params: the ``--param`` values.
        memory_bytes: a map task's buffer budget before it spills to disk.
        use_combiner: whether the job's ``combine`` runs.
        boundaries: range-partition boundaries (serialised keys), or None.
        output: the output directory (absolute, normalised).
        splits: the map tasks' input splits, one per map task.
        overwrite: replace an existing output directory once the job has succeeded.
        max_attempts: failed attempts of one task before the job fails.
        skip_bad_records: how many bad records the job may skip in all.
        backup_tasks: whether stragglers get backup attempts.
        job_source: the job file's content.
        py_files: helper modules shipped with the job: (relative path, content).
        storage_options: ``--storage-option`` values for the stores of URL inputs and
            outputs (credentials among them: never shown, only their keys).
    """

    job_id: str
    job_file_name: str
    input_format: str = "lines"
    num_reducers: int = 1
    params: dict[str, str] = field(default_factory=dict)
    memory_bytes: int = 256 << 20
    use_combiner: bool = True
    boundaries: tuple[bytes, ...] | None = None
    output: str = ""
    splits: tuple[InputSplit, ...] = ()
    overwrite: bool = False
    max_attempts: int = 4
    skip_bad_records: int = 0
    backup_tasks: bool = True
    job_source: bytes = b""
    py_files: tuple[tuple[str, bytes], ...] = ()
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def num_maps(self) -> int:
        return len(self.splits)

    def replace(self, **changes: object) -> JobSpec:
        """A copy with ``changes`` applied (for example the sampled boundaries)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> JobSpec:
        """Check every rule a spec from an untrusted client must keep; return the spec.

        Raises:
            InvalidSpec: a field is out of range; the message names it.
        """
        check_job_id(self.job_id)
        if not 1 <= self.num_reducers <= MAX_REDUCERS:
            raise InvalidSpec(f"num_reducers must be 1 to {MAX_REDUCERS} (got {self.num_reducers})")
        if len(self.splits) > MAX_SPLITS:
            raise InvalidSpec(f"at most {MAX_SPLITS} splits (got {len(self.splits)})")
        if self.input_format not in INPUT_FORMATS:
            known = ", ".join(sorted(INPUT_FORMATS))
            raise InvalidSpec(f"input_format {self.input_format[:50]!r} is not one of {known}")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise InvalidSpec(f"max_attempts must be 1 to {MAX_ATTEMPTS} (got {self.max_attempts})")
        if self.skip_bad_records < 0:
            raise InvalidSpec("skip_bad_records must be 0 or more")
        if self.memory_bytes < 1:
            raise InvalidSpec("memory_bytes must be positive")
        if not check_location(self.output):
            raise InvalidSpec(
                f"the output {self.output[:200]!r} must be an absolute, normalised path or a URL"
            )
        if self.output == "/" or (is_url(self.output) and _url_key(self.output) == ""):
            raise InvalidSpec(f"the output cannot be {self.output} (a root)")
        for split in self.splits:
            check_split(split)
            if split.path == self.output or split.path.startswith(self.output + "/"):
                raise InvalidSpec(
                    f"the output {self.output} holds the input {split.path}: "
                    "writing it would destroy the input"
                )
        check_job_file_name(self.job_file_name)
        names = {self.job_file_name}
        for name, _content in self.py_files:
            safe_name(name)
            if name in names:
                raise InvalidSpec(f"shipped file {name!r} is named twice (or as the job file)")
            names.add(name)
        if sum(len(k) + len(v) for k, v in self.params.items()) > MAX_PARAMS_BYTES:
            raise InvalidSpec(f"params are larger than {MAX_PARAMS_BYTES} bytes")
        if (
            sum(len(k) + len(v) for k, v in self.storage_options.items()) > MAX_PARAMS_BYTES
            or len(self.storage_options) > 1000
        ):
            raise InvalidSpec(f"storage options are larger than {MAX_PARAMS_BYTES} bytes")
        if self.boundaries is not None and len(self.boundaries) > self.num_reducers - 1:
            raise InvalidSpec("a range partition has at most num_reducers - 1 boundaries")
        return self


def check_job_id(job_id: str) -> str:
    """Job ids name directories on the master and the workers: letters, digits, ``_.-``
    (not ``..``, and none of :data:`RESERVED_JOB_IDS`)."""
    if not _JOB_ID.match(job_id) or ".." in job_id:
        raise InvalidSpec(f"invalid job id {job_id[:100]!r}: letters, digits and _.- only")
    if job_id.lower() in RESERVED_JOB_IDS:
        raise InvalidSpec(f"invalid job id {job_id!r}: the name is reserved")
    return job_id


def check_split(split: InputSplit) -> InputSplit:
    """A split names an absolute, normalised path and a byte range with ``start <= end``."""
    path = split.path
    if not check_location(path):
        raise InvalidSpec(
            f"split path {path[:200]!r} must be an absolute, normalised path or a URL"
        )
    if not 0 <= split.start <= split.end:
        raise InvalidSpec(f"split {path!r} [{split.start}, {split.end}) is invalid")
    return split


_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://([^/@]+)((?:/[^/]+)*)$")
_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(location: str) -> bool:
    """Whether an input or output is a URL (``s3://bucket/key``) rather than a path."""
    match = _PROTOCOL.match(location)
    return match is not None and match.group(1) != "file"


def _url_key(url: str) -> str:
    match = _URL.match(url)
    return match.group(3) if match else ""


def check_location(location: str) -> bool:
    """An input file or an output: an absolute, normalised path, or a normalised URL
    (``protocol://bucket/key``: no credentials, no empty, ``.`` or ``..`` part)."""
    if len(location) > MAX_PATH or "\0" in location:
        return False
    if is_url(location):
        match = _URL.match(location)
        return match is not None and not {".", ".."} & set(match.group(3).split("/"))
    return posixpath.isabs(location) and posixpath.normpath(location) == location


def check_job_file_name(name: str) -> str:
    """The job file's name: a base name ending in ``.py`` (it is imported under that name)."""
    if (
        not name.endswith(".py")
        or len(name) <= len(".py")
        or "/" in name
        or "\0" in name
        or name.startswith(".")
        or len(name) > MAX_NAME
    ):
        raise InvalidSpec(f"job_file_name {name[:100]!r} must be a file's base name ending in .py")
    return name


def safe_name(name: str) -> str:
    """A shipped file's name: a relative path without ``..``."""
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or ".." in parts
        or "." in parts
        or "" in parts
        or "\0" in name
        or len(name) > MAX_PATH
    ):
        raise InvalidSpec(f"shipped file name {name[:100]!r} must be a relative path without '..'")
    return name
