"""Word count whose first attempt of the task reading slow.txt crawls; later attempts are fast."""

import time

import mapreduce


def map(key, line):
    ctx = mapreduce.task_context()
    if key[0].endswith("slow.txt") and ctx.attempt == 0:
        time.sleep(60)
    for word in line.split():
        yield word, 1


def reduce(key, values):
    yield sum(values)
