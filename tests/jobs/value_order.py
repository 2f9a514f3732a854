"""Groups every line under its first word, keeping input order (tests value ordering)."""


def map(key, line):
    words = line.split()
    if words:
        yield words[0], [key[0].rsplit("/", 1)[-1], key[1]]


def reduce(word, places):
    yield list(places)
