"""Word count with map_split that raises on a split holding a line with POISON."""

from collections import Counter


def map_split(records):
    counts = Counter()
    for _key, line in records:
        if "POISON" in line:
            raise ValueError("poisoned split")
        counts.update(line.split())
    return counts.items()


def reduce(key, values):
    yield sum(values)
