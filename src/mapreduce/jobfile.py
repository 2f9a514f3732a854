"""Load a user's job file and check that it defines a usable job.

A job file is a Python module that defines:

* ``map(key, value)``: yields ``(k2, v2)`` pairs, or instead
  ``map_split(records)``: called once per input split with an iterator of its
  ``(k1, v1)`` records, returns or yields ``(k2, v2)`` pairs (one of the two is required);
* ``reduce(key, values)``: yields output values for ``key`` (required);
* ``combine(key, values)``: like ``reduce``, run on map output (optional);
* ``setup()``: called when the job is planned and before every task (optional):
  the place to check ``mapreduce.params()`` and prepare what tasks share;
* ``partition(key, num_reducers) -> int`` (optional), or
  ``partition = mapreduce.RangePartitioner(...)`` for a total order;
* ``INPUT_FORMAT``: ``"lines"`` (default), ``"files"``, ``"jsonl"`` or ``"tsv"`` (optional).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mapreduce.dataflow.formats import INPUT_FORMATS
from mapreduce.dataflow.partition import RangePartitioner
from mapreduce.errors import JobDefinitionError

#: The names a job file may define (all but map and reduce optional).
JOB_ATTRIBUTES = (
    "map",
    "map_split",
    "reduce",
    "combine",
    "setup",
    "partition",
    "INPUT_FORMAT",
)

MapFn = Callable[[Any, Any], Iterable[tuple[Any, Any]]]
MapSplitFn = Callable[[Iterator[tuple[Any, Any]]], Iterable[tuple[Any, Any]] | None]
ReduceFn = Callable[[Any, Iterable[Any]], Iterable[Any]]
PartitionFn = Callable[[Any, int], int]


@dataclass(frozen=True)
class Job:
    """A loaded job: the user's functions and settings.

    Attributes:
        path: the job file's path.
        module: the imported module.
        map_fn: the user's ``map``, or None when it defines ``map_split``.
        map_split_fn: the user's ``map_split``, or None when it defines ``map``.
        reduce_fn: the user's ``reduce``.
        combine_fn: the user's ``combine`` or None.
        setup_fn: the user's ``setup`` or None.
        partition_fn: a ``partition(key, R)`` function, or None.
        range_partitioner: the job's ``partition = RangePartitioner()``, or None.
        input_format: the ``INPUT_FORMAT`` the file sets, or None.
    """

    path: str
    module: ModuleType
    map_fn: MapFn | None
    map_split_fn: MapSplitFn | None
    reduce_fn: ReduceFn
    combine_fn: ReduceFn | None
    setup_fn: Callable[[], object] | None
    partition_fn: PartitionFn | None
    range_partitioner: RangePartitioner | None
    input_format: str | None


_loaded: dict[str, Job] = {}


def load_job(path: str) -> Job:
    """Import the job file at ``path`` (once per process) and check it.

    The job file's directory is put on ``sys.path`` so that it can import helper
    modules that sit beside it.

    Raises:
        JobDefinitionError: the file is missing, does not import, or lacks ``map``/``reduce``.
    """
    real = os.path.realpath(path)
    if real in _loaded:
        return _loaded[real]
    if not os.path.isfile(real):
        raise JobDefinitionError(path, "no such file")
    directory = os.path.dirname(real)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = "mapreduce_job_" + os.path.splitext(os.path.basename(real))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, real)
    if spec is None or spec.loader is None:
        raise JobDefinitionError(path, "cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise JobDefinitionError(path, f"syntax error at line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        del sys.modules[name]
        raise JobDefinitionError(
            path, f"raised while being imported:\n{traceback.format_exc()}"
        ) from exc
    job = _check(path, module)
    _loaded[real] = job
    return job


def _function(path: str, module: ModuleType, name: str, *, required: bool) -> Any:
    value = getattr(module, name, None)
    if value is None:
        if required:
            raise JobDefinitionError(path, f"defines no `{name}` function")
        return None
    if not callable(value):
        raise JobDefinitionError(path, f"`{name}` is not a function")
    return value


def _check(path: str, module: ModuleType) -> Job:
    map_fn = _function(path, module, "map", required=False)
    map_split_fn = _function(path, module, "map_split", required=False)
    if (map_fn is None) == (map_split_fn is None):
        raise JobDefinitionError(
            path,
            "defines both `map` and `map_split`: define one"
            if map_fn is not None
            else "defines no `map` function (nor `map_split`)",
        )
    reduce_fn = _function(path, module, "reduce", required=True)
    combine_fn = _function(path, module, "combine", required=False)
    setup_fn = _function(path, module, "setup", required=False)
    partition = getattr(module, "partition", None)
    range_partitioner = partition if isinstance(partition, RangePartitioner) else None
    partition_fn = None
    if range_partitioner is None:
        partition_fn = _function(path, module, "partition", required=False)
    input_format = getattr(module, "INPUT_FORMAT", None)
    if input_format is not None and input_format not in INPUT_FORMATS:
        raise JobDefinitionError(
            path,
            f"INPUT_FORMAT = {input_format!r} is not one of {', '.join(sorted(INPUT_FORMATS))}",
        )
    return Job(
        path=path,
        module=module,
        map_fn=map_fn,
        map_split_fn=map_split_fn,
        reduce_fn=reduce_fn,
        combine_fn=combine_fn,
        setup_fn=setup_fn,
        partition_fn=partition_fn,
        range_partitioner=range_partitioner,
        input_format=input_format,
    )
