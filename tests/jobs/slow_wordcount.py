"""Word count (as examples/wordcount.py) whose map sleeps --param delay=SECONDS every 100 lines.

For the namespace fault tests (tests/test_netbed.py): each map task then runs long enough for
a fault to land while it runs, whatever the machine's speed.  The delay changes no output, so
the reference is the same job run with ``--local`` (and ``delay=0``).
"""

import re
import time

import mapreduce

WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")

_lines = 0


def map(key, line):
    global _lines
    _lines += 1
    if _lines % 100 == 0:
        time.sleep(float(mapreduce.params().get("delay", "0")))
    for word in WORD.findall(line.lower()):
        yield word, 1


def combine(word, counts):
    yield sum(counts)


def reduce(word, counts):
    yield sum(counts)
