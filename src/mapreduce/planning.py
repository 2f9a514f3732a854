"""Plan a job: from the command's options to the one :class:`~mapreduce.core.spec.JobSpec`.

Planning lists the input splits, samples the boundaries of a range
partitioner, reads the job's code and checks its ``setup()``.  The sequential
runner and ``run``/``submit`` plan a job the same way, so every task of either
receives the same spec.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import dataclass, field

from mapreduce import context
from mapreduce.core.spec import MAX_ATTEMPTS, MAX_REDUCERS, MAX_SPLITS, InputSplit, JobSpec
from mapreduce.dataflow import storage
from mapreduce.dataflow.formats import INPUT_FORMATS, read_split
from mapreduce.dataflow.keys import encode_key
from mapreduce.dataflow.partition import boundaries_from_sample
from mapreduce.dataflow.splits import expand_inputs, input_roots, plan_splits
from mapreduce.errors import BadRecordError, JobDefinitionError, UsageError
from mapreduce.jobfile import Job, load_job

DEFAULT_SPLIT_SIZE = 64 << 20
DEFAULT_MEMORY_MB = 256
#: Largest total size of a job's code (job file and --py-files).
MAX_JOB_CODE_BYTES = 16 << 20


@dataclass(frozen=True)
class JobOptions:
    """How to run a job: every ``mapreduce run`` flag that shapes the job.

    Attributes:
        job_path: the job file.
        inputs: input files, directories and globs.
        output: the output directory.
        num_reducers: R, the number of reduce tasks and output files.
        input_format: overrides the job file's ``INPUT_FORMAT`` when set.
        split_size: the largest byte range of a line-oriented file one map task reads.
        memory_mb: a map task's buffer budget before it spills to disk.
        params: ``--param NAME=VALUE`` values for job code.
        overwrite: replace an existing output directory.
        skip_bad_records: how many bad records the job may skip in all.
        use_combiner: run the job's ``combine`` (for testing that it changes nothing).
        job_id: the job's id; a fresh one when empty.
        max_attempts: failed attempts of a task before the job fails (distributed).
        backup_tasks: start backup attempts of stragglers (distributed).
        py_files: helper modules or package directories shipped with the job.
        storage_options: ``--storage-option KEY=VALUE`` values for URL inputs and outputs.
    """

    job_path: str
    inputs: tuple[str, ...]
    output: str
    num_reducers: int = 1
    input_format: str | None = None
    split_size: int = DEFAULT_SPLIT_SIZE
    memory_mb: int = DEFAULT_MEMORY_MB
    params: dict[str, str] = field(default_factory=dict)
    overwrite: bool = False
    skip_bad_records: int = 0
    use_combiner: bool = True
    job_id: str = ""
    max_attempts: int = 4
    backup_tasks: bool = True
    py_files: tuple[str, ...] = ()
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)

    def validate(self) -> None:
        """Reject impossible values, naming the flag.

        Raises:
            UsageError: a value is out of range.
        """
        if not 1 <= self.num_reducers <= MAX_REDUCERS:
            raise UsageError(f"--reducers must be 1 to {MAX_REDUCERS} (got {self.num_reducers})")
        if self.split_size < 1:
            raise UsageError(f"--split-size must be at least 1 byte (got {self.split_size})")
        if self.memory_mb < 1:
            raise UsageError(f"--memory-mb must be at least 1 (got {self.memory_mb})")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise UsageError(
                f"--max-attempts must be 1 to {MAX_ATTEMPTS} (got {self.max_attempts})"
            )
        if self.skip_bad_records < 0:
            raise UsageError(f"--skip-bad-records must be 0 or more (got {self.skip_bad_records})")
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise UsageError(
                f"--input-format {self.input_format!r} is not one of "
                f"{', '.join(sorted(INPUT_FORMATS))}"
            )


def new_job_id() -> str:
    return "job-" + os.urandom(6).hex()  # as secrets.token_hex, without importing hmac


def plan_job(options: JobOptions) -> tuple[Job, JobSpec]:
    """Load the job, list the input splits and build the spec every task receives.

    Raises:
        UsageError, JobDefinitionError, InputError: bad flags, job file or inputs.
    """
    options.validate()
    job = load_job(options.job_path)
    input_format = options.input_format or job.input_format or "lines"
    inputs = tuple(storage.normalize(path) for path in options.inputs)
    output = storage.normalize(options.output)
    stores = options.storage_options
    # Absolute paths: the same keys (path, offset) whichever directory or machine runs a task.
    sizes: dict[str, int] = {}
    files = [
        path if storage.is_url(path) else os.path.abspath(path)
        for path in expand_inputs(inputs, stores, sizes)
    ]
    check_output_apart(output, input_roots(inputs))
    if storage.is_url(output):
        check_store_output(output, options)
    splits = plan_splits(files, input_format, options.split_size, sizes, stores)
    if len(splits) > MAX_SPLITS:
        raise UsageError(
            f"the input makes {len(splits)} map tasks at --split-size {options.split_size}; "
            f"at most {MAX_SPLITS}: choose a larger --split-size"
        )
    with open(options.job_path, "rb") as f:
        source = f.read()
    py_files = _read_py_files(options.py_files)
    if len(source) + sum(len(c) for _n, c in py_files) > MAX_JOB_CODE_BYTES:
        raise UsageError(f"the job's code is larger than {MAX_JOB_CODE_BYTES >> 20} MiB")
    spec = JobSpec(
        job_id=options.job_id or new_job_id(),
        job_file_name=os.path.basename(options.job_path),
        input_format=input_format,
        num_reducers=options.num_reducers,
        params=dict(options.params),
        memory_bytes=options.memory_mb << 20,
        use_combiner=options.use_combiner,
        output=output if storage.is_url(output) else os.path.normpath(os.path.abspath(output)),
        splits=tuple(splits),
        overwrite=options.overwrite,
        max_attempts=options.max_attempts,
        skip_bad_records=options.skip_bad_records,
        backup_tasks=options.backup_tasks,
        job_source=source,
        py_files=py_files,
        storage_options=dict(stores),
    )
    if job.setup_fn is not None:
        check_setup(job, spec)
    if job.range_partitioner is not None:
        sampled = sample_keys(job, spec, list(spec.splits), job.range_partitioner.sample_size)
        spec = spec.replace(boundaries=tuple(boundaries_from_sample(sampled, spec.num_reducers)))
    return job, spec


def check_output_apart(output: str, inputs: list[str]) -> None:
    """Refuse an output that is, holds or lies inside an input (symbolic links resolved),
    with or without ``--overwrite``: writing it would destroy the input, or the next run
    would read the output as input.

    Raises:
        UsageError: naming the output and the input.
    """
    out = output if storage.is_url(output) else os.path.realpath(output)
    for path in inputs:
        if storage.is_url(path) != storage.is_url(output):
            continue  # a store and a file system never overlap
        real = path if storage.is_url(path) else os.path.realpath(path)
        if out == real:
            raise UsageError(f"--output {output} is the input {path}: it would be destroyed")
        if _inside(real, out):
            raise UsageError(
                f"--output {output} holds the input {path}: writing it would destroy the input"
            )
        if _inside(out, real):
            raise UsageError(
                f"--output {output} is inside the input {path}: choose an output outside "
                "every input (it would be read as input by the next run)"
            )


def check_store_output(output: str, options: JobOptions) -> None:
    """Check an output URL before any work: the store answers with these credentials, the
    bucket exists and the output may be written (it is absent, or ``--overwrite``).

    Raises:
        OutputError: naming the URL (no bucket, no credentials, access denied).
        OutputExistsError, UsageError: see :meth:`OutputCommitter.check`.
    """
    from mapreduce.dataflow.commit import output_committer

    committer = output_committer(
        output, "plan", overwrite=options.overwrite, options=options.storage_options
    )
    committer.check()


def _inside(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def _read_py_files(paths: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    """Helper modules (files, or package directories) shipped beside the job file."""
    shipped = []
    for path in paths:
        if os.path.isdir(path):
            base = os.path.dirname(os.path.abspath(path))
            for root, _dirs, names in os.walk(path):
                for name in sorted(names):
                    if name.endswith(".py"):
                        full = os.path.join(root, name)
                        with open(full, "rb") as f:
                            shipped.append((os.path.relpath(full, base), f.read()))
        elif os.path.isfile(path):
            with open(path, "rb") as f:
                shipped.append((os.path.basename(path), f.read()))
        else:
            raise UsageError(f"--py-files {path}: no such file or directory")
    return tuple(shipped)


def check_setup(job: Job, spec: JobSpec) -> None:
    """Run the job's ``setup()`` once before any task, so a bad ``--param`` fails at once.

    Raises:
        JobDefinitionError: ``setup()`` raised; the message carries its error.
    """
    planning = context.TaskContext(spec.job_id, "plan", "plan", 0, 0, "local", spec.num_reducers)
    assert job.setup_fn is not None
    with context.activated(planning, spec.params, Counter()):
        try:
            job.setup_fn()
        except Exception as exc:
            raise JobDefinitionError(
                spec.job_file_name, f"setup() failed: {type(exc).__name__}: {exc}"
            ) from exc


def sample_keys(job: Job, spec: JobSpec, splits: list[InputSplit], size: int) -> list[bytes]:
    """Run ``map`` (or ``map_split``) over the first records of every split and collect
    the keys it emits.

    Up to ``size`` input records are read in all, spread evenly over the splits.
    Records that fail to decode or make ``map`` raise are left out of the sample;
    the map phase reports them.
    """
    if not splits:
        return []
    per_split = max(1, size // len(splits))
    keys: list[bytes] = []
    sampling = context.TaskContext(
        spec.job_id, "sample", "sample", 0, 0, "local", spec.num_reducers
    )
    with context.activated(sampling, spec.params, Counter()):  # counters while sampling: dropped
        for split in splits:
            records = read_split(split, spec.input_format, options=spec.storage_options)
            if job.map_split_fn is not None:
                first = itertools.islice(records, per_split)
                head = ((key, value) for _offset, key, value in first)
                try:
                    pairs = list(job.map_split_fn(head) or ())
                except Exception:
                    continue  # the map phase reports it (a bad record too)
                keys.extend(encode_key(k) for k, _v in pairs)
                continue
            assert job.map_fn is not None
            try:
                for _offset, key, value in itertools.islice(records, per_split):
                    try:
                        pairs = list(job.map_fn(key, value) or ())
                    except Exception:
                        continue  # the map phase reports (or skips) this record
                    keys.extend(encode_key(k) for k, _v in pairs)
            except BadRecordError:
                continue  # likewise: the map phase reports it with its offset
    return keys
