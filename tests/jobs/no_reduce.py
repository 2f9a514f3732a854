def map(key, value):
    yield key, value
