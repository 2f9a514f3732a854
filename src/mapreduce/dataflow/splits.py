"""Turn input paths into input splits, one map task each.

Inputs are files, directories (walked recursively, in name order) and glob
patterns.  Names starting with ``_`` or ``.`` are skipped inside directories,
as Hadoop does, so that one job's output directory (with ``_SUCCESS`` and
``_summary.json``) can be the next job's input.  A file or directory that
cannot be read is an error naming it: a job never runs on part of its input.

Line-oriented files are cut into byte ranges of ``split_size`` bytes.  A line
belongs to the split in which its first byte lies, so every line is read
exactly once whatever the split size (see :func:`mapreduce.dataflow.formats.read_split`).
Compressed (``.gz``, ``.bz2``, ``.zst``) files and the ``files`` format give one split
per file.

An input may also be a URL (``s3://bucket/prefix``): it is listed through
:mod:`mapreduce.dataflow.storage` by the same rules (and a job's output with a ``_SUCCESS``
manifest gives exactly the parts it lists).
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence

from mapreduce.core.spec import InputSplit
from mapreduce.dataflow import storage
from mapreduce.errors import InputError

__all__ = ["InputSplit", "expand_inputs", "plan_splits"]


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def expand_inputs(
    inputs: Sequence[str],
    options: Mapping[str, str] | None = None,
    sizes: dict[str, int] | None = None,
) -> list[str]:
    """The input files named by ``inputs``, in a stable order, each once.

    Args:
        options: storage options for the inputs that are URLs.
        sizes: filled with the size of each file that is a URL (known from its listing).

    Raises:
        InputError: an input does not exist or matches no file, a file or directory under
            it cannot be read, or no file at all is found.
    """
    if not inputs:
        raise InputError("no input given (--input)")
    files: list[str] = []
    for spec in inputs:
        if storage.is_url(spec):
            listed = storage.list_input(spec, options or {})
            files.extend(url for url, _size in listed)
            if sizes is not None:
                sizes.update(listed)
        elif os.path.isdir(spec):
            files.extend(_walk(spec))
        elif os.path.isfile(spec):
            files.append(spec)
        elif glob.has_magic(spec):
            matched = sorted(glob.glob(spec))
            if not matched:
                raise InputError(f"input pattern {spec!r} matches no file")
            for path in matched:
                files.extend(_walk(path) if os.path.isdir(path) else [path])
        else:
            raise InputError(f"input {spec!r} does not exist")
    seen: set[str] = set()
    unique = []
    for path in files:
        if storage.is_url(path):
            if path not in seen:
                seen.add(path)
                unique.append(path)
            continue
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
            _check_readable(path)
    if not unique:
        raise InputError(f"inputs {', '.join(inputs)} hold no file")
    return unique


def input_roots(inputs: Sequence[str]) -> list[str]:
    """The files and directories that ``inputs`` name (glob patterns expanded)."""
    roots: list[str] = []
    for spec in inputs:
        if storage.is_url(spec):  # a pattern: the prefix before its first wildcard
            parts = spec.split("/")
            fixed = [p for p in itertools.takewhile(lambda p: not glob.has_magic(p), parts)]
            roots.append("/".join(fixed))
        elif os.path.exists(spec) or not glob.has_magic(spec):
            roots.append(spec)
        else:
            roots.extend(sorted(glob.glob(spec)))
    return roots


def _check_readable(path: str) -> None:
    try:  # (non-blocking: a FIFO without a writer must not hang the planning)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(f"cannot read input file {path}: {exc.strerror}") from exc
    os.close(fd)


def _unreadable(exc: OSError) -> None:
    raise InputError(f"cannot read input directory {exc.filename}: {exc.strerror}") from exc


def _walk(directory: str) -> Iterable[str]:
    found: list[str] = []
    for root, dirs, names in os.walk(directory, onerror=_unreadable):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        found.extend(os.path.join(root, n) for n in sorted(names) if not _hidden(n))
    return sorted(found)


def is_splittable(path: str, input_format: str) -> bool:
    """Whether ``path`` may be cut into byte ranges under ``input_format``."""
    return input_format != "files" and not storage.is_compressed(path)


def plan_splits(
    files: Sequence[str],
    input_format: str,
    split_size: int,
    sizes: Mapping[str, int] | None = None,
    options: Mapping[str, str] | None = None,
) -> list[InputSplit]:
    """Cut ``files`` into splits of at most ``split_size`` bytes (empty files give none).

    ``sizes``: the sizes already known (of URLs, from their listing)."""
    if split_size < 1:
        raise ValueError("split size must be at least 1 byte")
    splits = []
    for path in files:
        if sizes is not None and path in sizes:
            size = sizes[path]
        else:
            size = storage.input_size(path, options or {})
        if size == 0 and input_format != "files":
            continue
        if not is_splittable(path, input_format):
            splits.append(InputSplit(path, 0, size))
            continue
        splits.extend(
            InputSplit(path, start, min(start + split_size, size))
            for start in range(0, size, split_size)
        )
    return splits
