"""Word count by str.split, with a combiner (combiner on/off and spill tests)."""


def map(key, line):
    for word in line.split():
        yield word, 1


def combine(word, counts):
    yield sum(counts)


def reduce(word, counts):
    yield sum(counts)
