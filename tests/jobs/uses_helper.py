"""Word count whose tokenizer lives in a helper module beside the job file."""

from helper_words import words


def map(key, line):
    for word in words(line):
        yield word, 1


def reduce(key, values):
    yield sum(values)
