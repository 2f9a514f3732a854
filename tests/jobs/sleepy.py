"""Word count whose map sleeps --param sleep=SECONDS (default 1) before its first record."""

import time

import mapreduce

_slept = False


def map(key, line):
    global _slept
    if not _slept:
        _slept = True
        time.sleep(float(mapreduce.params().get("sleep", "1")))
    for word in line.split():
        yield word, 1


def reduce(key, values):
    yield sum(values)
