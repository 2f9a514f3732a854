"""Inverted index (the paper's section 2.3): for each word, the documents that contain it.

Input: text files, one document per file (``INPUT_FORMAT = "files"``).  A
document is named by its file name (``os.path.basename`` of its path), so two
input files with the same name in different directories count as one document.
A word is a maximal run of letters, digits and apostrophes, lower-cased, as in
wordcount.py.

``map`` emits ``(word, document)`` once for every distinct word of a document;
``reduce`` emits the sorted list of the distinct documents of a word.

    mapreduce run examples/inverted_index.py --input ../shared/data/gutenberg \\
        --output /tmp/inverted-index --reducers 4 --local

Output: ``word<TAB>["document", ...]``: one line per word, its documents a
JSON list of file names in increasing order; each part file sorted by word.
"""

import os
import re
from collections.abc import Iterable, Iterator

INPUT_FORMAT = "files"

WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def map(path: str, text: str) -> Iterator[tuple[str, str]]:
    document = os.path.basename(path)
    for word in sorted(set(WORD.findall(text.lower()))):
        yield word, document


def reduce(word: str, documents: Iterable[str]) -> Iterator[list[str]]:
    yield sorted(set(documents))
