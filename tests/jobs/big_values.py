"""Each line becomes one pair (its byte offset, the line): the map output is as large as the
input.  The map of a file named ``stall.txt`` holds still before its first record until the
file ``--param release=PATH`` exists (at most ``--param stall=SECONDS``, default 60), so a
test can keep the job running while it fetches the other map outputs."""

import os
import time

import mapreduce


def map(key, line):
    path, offset = key
    if os.path.basename(path) == "stall.txt":
        params = mapreduce.params()
        deadline = time.monotonic() + float(params.get("stall", "60"))
        while time.monotonic() < deadline and not os.path.exists(params.get("release", "")):
            time.sleep(0.05)
    yield offset, line


def reduce(key, values):
    yield len(list(values))
