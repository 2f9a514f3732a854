"""Emits keys of several types to check sorting and output formatting."""


def map(key, line):
    n = int(line)
    yield n, n
    yield ("pair", n % 3, -n), 1
    yield float(n) / 4, 1


def reduce(key, values):
    yield sum(values)
