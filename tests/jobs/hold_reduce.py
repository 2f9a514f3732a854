"""Word count whose reduce of the key ``--param key=K`` waits until ``--param release=PATH``
exists (at most ``--param stall=SECONDS``, default 60), so a test can hold one partition
in the reduce phase while the others finish."""

import os
import time

import mapreduce


def map(key, line):
    for word in line.split():
        yield word, 1


def reduce(key, values):
    params = mapreduce.params()
    if key == params.get("key"):
        deadline = time.monotonic() + float(params.get("stall", "60"))
        while time.monotonic() < deadline and not os.path.exists(params.get("release", "")):
            time.sleep(0.05)
    yield sum(values)
