"""Term vector per host (the paper's section 2.3): the most frequent words of each host's pages.

Input: JSON lines, one document a line: ``{"url": URL, "text": TEXT}``
(``INPUT_FORMAT = "jsonl"``).  The host is the URL's host name, lower-cased and
without port (``https://WWW.Example.com:8443/a`` is ``www.example.com``).  A word
is a maximal run of letters, digits and apostrophes, lower-cased, as in
wordcount.py.

``map`` emits ``(host, term vector)`` for each document, the term vector being
a ``{word: count}`` dict of the document's words; ``combine`` adds the vectors
of a host up; ``reduce`` adds them up, keeps the ``top`` most frequent words
(``--param top=N``, a positive integer, default 10), most frequent first, ties
broken by word in increasing order.  A ``top`` that is not a positive integer
fails the job with a message naming ``--param top``.

Records that are valid JSON but not a usable document (not an object, no
string ``url`` with a host name, no string ``text``) are skipped and counted in
the user counter ``malformed records``.  A line that is not valid JSON fails
the job, as for every ``jsonl`` job, unless ``--skip-bad-records N`` is given.

    python examples/gen_web_docs.py /tmp/web-docs --docs 100000 --files 4
    mapreduce run examples/term_vector.py --input /tmp/web-docs \\
        --output /tmp/term-vectors --param top=5 --reducers 2 --local

Output: ``host<TAB>[["word", count], ...]``: one line per host, its top words
as a JSON list of ``[word, count]`` pairs; each part file sorted by host.
"""

import functools
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import mapreduce

INPUT_FORMAT = "jsonl"

WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
DEFAULT_TOP = "10"


@functools.lru_cache(maxsize=4)
def parse_top(text: str) -> int:
    try:
        top = int(text)
    except ValueError:
        top = 0
    if top < 1:
        raise ValueError(f"--param top={text!r} must be a positive integer")
    return top


def top_n() -> int:
    """The ``--param top`` value.

    Raises:
        ValueError: it is not a positive integer.
    """
    return parse_top(mapreduce.params().get("top", DEFAULT_TOP))


def host_of(document: Any) -> str | None:
    """The document's host name, or None when the record is not a usable document."""
    if not isinstance(document, dict):
        return None
    url, text = document.get("url"), document.get("text")
    if not isinstance(url, str) or not isinstance(text, str):
        return None
    try:
        return urlsplit(url).hostname or None
    except ValueError:  # such as an unbalanced "[" in an IPv6 host
        return None


def setup() -> None:
    """Check ``--param top`` when the job is planned, before any task runs."""
    top_n()


def map(key: tuple[str, int], document: Any) -> Iterator[tuple[str, dict[str, int]]]:
    top_n()  # fail on the first record rather than at the end of the map phase
    host = host_of(document)
    if host is None:
        mapreduce.increment_counter("malformed records")
        return
    yield host, dict(Counter(WORD.findall(document["text"].lower())))


def add(vectors: Iterable[dict[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for vector in vectors:
        total.update(vector)
    return total


def combine(host: str, vectors: Iterable[dict[str, int]]) -> Iterator[dict[str, int]]:
    yield dict(add(vectors))


def reduce(host: str, vectors: Iterable[dict[str, int]]) -> Iterator[list[tuple[str, int]]]:
    ranked = sorted(add(vectors).items(), key=lambda item: (-item[1], item[0]))
    yield ranked[: top_n()]
