"""Distributed sort (the paper's sections 2.3 and 5.3): records sorted by key, globally.

Input: TeraSort-style records, one a line, the first 10 characters of a line
being its key (``../shared/bench/gen_records.py`` writes such lines of 100
bytes: a 10-byte printable-ASCII key, then an 89-byte payload and ``\\n``).
Keys compare by code point, which for ASCII is byte order.

``map`` emits ``(key, rest)``: the line's first 10 characters and the rest of
the line (a line shorter than that is all key).  ``partition =
mapreduce.RangePartitioner()`` samples the keys before the map phase and gives
each reduce task one range of keys, every key of ``part-i`` sorting before
every key of ``part-(i+1)``.  ``reduce`` is the identity: it yields each rest
of its key, in input order (map tasks in input order, then line order).  A
reduce whose body is only ``yield from values`` (or ``reduce =
mapreduce.identity_reduce``) is recognised: its tasks write the merged runs
without calling it for each key.

    python ../shared/bench/gen_records.py /tmp/records --records 1000000 --files 4
    mapreduce run examples/sort.py --input /tmp/records --output /tmp/sorted \\
        --reducers 4 --local

Output: one line per input line, ``KEY<TAB>REST``: the input line (without its
line ending) with a TAB inserted after its 10-character key (after the whole
line, if it is shorter), so 101 bytes with the newline for a 100-byte record.
``cat OUTPUT/part-*`` is sorted by key, records with equal keys in input order
(a stable sort); deleting the TAB gives back the input records, sorted::

    cat /tmp/sorted/part-* | sed 's/\\t//' > /tmp/sorted.txt
"""

from collections.abc import Iterable, Iterator

import mapreduce

KEY_LENGTH = 10

# Total order: concatenating the part files in order gives globally sorted output.
partition = mapreduce.RangePartitioner()


def map(key: tuple[str, int], record: str) -> Iterator[tuple[str, str]]:
    yield record[:KEY_LENGTH], record[KEY_LENGTH:]


def reduce(key: str, rests: Iterable[str]) -> Iterator[str]:
    yield from rests
