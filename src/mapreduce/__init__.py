"""mapreduce: MapReduce as in Dean & Ghemawat (OSDI 2004), in Python.

A job is a Python file that defines ``map(key, value)`` and
``reduce(key, values)``; see the README for the whole contract.  Job code may
use the functions re-exported here:

* :func:`params`: the ``--param NAME=VALUE`` values, as a dict of strings;
* :func:`task_context`: which job, task, attempt and worker is running;
* :func:`increment_counter`: user counters, summed over the job;
* :class:`RangePartitioner`: ``partition = RangePartitioner()`` for a total order;
* :func:`identity_reduce`: ``reduce = identity_reduce`` passes every value through.

Scripts and notebooks run jobs with :func:`run` and read outputs with
:func:`read_output` (see :mod:`mapreduce.api`).
"""

__version__ = "0.1.0"

from mapreduce.api import RunResult, read_output, run
from mapreduce.context import TaskContext, increment_counter, params, task_context
from mapreduce.dataflow.partition import RangePartitioner
from mapreduce.dataflow.sort import identity_reduce
from mapreduce.errors import JobFailedError

__all__ = [
    "JobFailedError",
    "RangePartitioner",
    "RunResult",
    "TaskContext",
    "__version__",
    "identity_reduce",
    "increment_counter",
    "params",
    "read_output",
    "run",
    "task_context",
]
