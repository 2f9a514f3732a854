"""Records when user code first runs in a task: the job ``bench/startup.py`` measures.

On its first call in a process, ``map`` takes ``time.time()`` and appends it,
as one line, to the file named by ``--param stamp=PATH`` (appends of one short
line are atomic, so tasks running at once in several processes each add their
line).  The earliest line is when the first map task began processing its
first record: the end of the job's start-up.

    mapreduce run bench/jobs/first_task_probe.py --input TINY.txt --output OUT \\
        --param stamp=/tmp/stamp.txt --local

Output: one line ``lines<TAB>N``, the number of input lines.
"""

import os
import time
from collections.abc import Iterable, Iterator

import mapreduce

_stamped = False


def map(key: tuple[str, int], line: str) -> Iterator[tuple[str, int]]:
    global _stamped
    if not _stamped:
        now = time.time()
        _stamped = True
        fd = os.open(mapreduce.params()["stamp"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{now!r}\n".encode())
        finally:
            os.close(fd)
    yield "lines", 1


def reduce(key: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)
