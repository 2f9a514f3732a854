"""Counts lines with a user counter; writes params and task context into the output."""

import mapreduce


def map(key, line):
    mapreduce.increment_counter("lines")
    if not line.strip():
        mapreduce.increment_counter("blank lines")
    ctx = mapreduce.task_context()
    yield "map-context", [ctx.kind, ctx.task_id, ctx.attempt, ctx.num_reducers]


def reduce(key, values):
    ctx = mapreduce.task_context()
    first = next(iter(values))
    yield {"map": first, "reduce": [ctx.kind, ctx.task_id], "params": mapreduce.params()}
