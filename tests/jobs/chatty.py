"""Prints to stdout and stderr; its first map attempt then raises (for the logs command)."""

import sys

import mapreduce


def map(key, line):
    ctx = mapreduce.task_context()
    print(f"hello from {ctx.task_id} attempt {ctx.attempt}")
    print("a warning on stderr", file=sys.stderr)
    if ctx.attempt == 0:
        raise RuntimeError("first attempts always fail")
    yield line, 1


def reduce(key, values):
    yield sum(values)
