"""Word count whose map runs out of file descriptors on the line ``LEAK``: it opens files
(under a soft limit of 128) until the system refuses, closes them, and lets the error out.
Running out of file descriptors is the machine's limit, not the record's fault."""

import os
import resource

import mapreduce


def map(key, line):
    if line == "LEAK":
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(128, hard), hard))
        files = []
        try:
            while True:
                files.append(open(os.devnull))  # noqa: SIM115
        finally:
            for f in files:
                f.close()
    for word in line.split():
        mapreduce.increment_counter("words")
        yield word, 1


def reduce(key, values):
    yield sum(values)
