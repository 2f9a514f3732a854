import this_module_does_not_exist  # noqa: F401


def map(key, value):
    yield key, value


def reduce(key, values):
    yield from values
