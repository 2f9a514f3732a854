"""Word count with user counters whose map of stall.txt holds still before its first record.

Every attempt of the task reading a file named ``stall.txt`` waits before its first record:
``--param stall=SECONDS`` (default 6) at most, and no longer than until the file
``--param release=PATH`` exists, so a test can hold a job mid-run for as long as it looks at it.
Every other map task runs at once.
"""

import os
import time

import mapreduce

QUOTED = "lines with 'quote' or <tag>"  # a counter name that needs escaping in HTML

_held = set()


def _hold():
    params = mapreduce.params()
    deadline = time.monotonic() + float(params.get("stall", "6"))
    release = params.get("release", "")
    while time.monotonic() < deadline:
        if release and os.path.exists(release):
            return
        time.sleep(0.05)


def map(key, line):
    ctx = mapreduce.task_context()
    attempt = (ctx.job_id, ctx.task_id, ctx.attempt)
    if os.path.basename(key[0]) == "stall.txt" and attempt not in _held:
        _held.add(attempt)
        _hold()
    mapreduce.increment_counter("lines")
    words = line.split()
    if words:
        mapreduce.increment_counter("words", len(words))
    if "'" in line or "<" in line:
        mapreduce.increment_counter(QUOTED)
    for word in words:
        yield word, 1


def reduce(key, values):
    yield sum(values)
