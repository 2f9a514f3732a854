"""Word count whose map raises on any line containing POISON, and reduce on key 'VENOM'."""


def map(key, line):
    if "POISON" in line:
        raise ValueError("poisoned line")
    for word in line.split():
        yield word, 1


def reduce(key, values):
    if key == "VENOM":
        raise RuntimeError("poisoned key")
    yield sum(values)
