"""A job whose setup() requires --param n and counts how often it ran in each task."""

import mapreduce

calls = 0


def setup():
    global calls
    params = mapreduce.params()
    if "n" not in params:
        raise ValueError("needs --param n=NUMBER")
    calls += 1


def map(key, line):
    yield mapreduce.task_context().kind, calls


def reduce(key, values):
    yield max(values)
