"""Kills its own process (os._exit) in the first attempt of every map task."""

import os

import mapreduce


def map(key, line):
    if mapreduce.task_context().attempt == 0:
        os._exit(7)
    yield line, 1


def reduce(key, values):
    yield sum(values)
