"""Reverse web-link graph (the paper's section 2.3): for each link target, the pages linking to it.

Input: HTML pages, one page per file (``INPUT_FORMAT = "files"``).  A page is
named by its file name (``os.path.basename`` of its path), so pages in one
directory that link to each other by relative file name (``page-0042.html``)
form one graph; two input files with the same name in different directories
count as one page.

``map`` parses the page with :class:`html.parser.HTMLParser` and emits
``(target, source)`` once for every distinct target of the page's
``<a href=...>`` elements.  The target is the ``href`` value as written, with
character references decoded (``&amp;`` is ``&``), surrounding whitespace and
any ``#fragment`` removed; links with an empty target (``href=""``, in-page
anchors such as ``#top``) are left out, and so is anything that is not an
``<a href>`` element outside comments and scripts.  ``reduce`` emits the sorted
list of distinct sources.

    python examples/gen_html_pages.py /tmp/pages --pages 1000
    mapreduce run examples/reverse_links.py --input /tmp/pages \\
        --output /tmp/reverse-links --reducers 2 --local

Output: ``target<TAB>["source", ...]``: one line per link target, the sources
a JSON list of page file names in increasing order, each part file sorted by
target.
"""

import os
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser

INPUT_FORMAT = "files"


class LinkParser(HTMLParser):
    """Collects the targets of the ``<a href>`` elements of one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.targets: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        for name, value in attrs:
            if name == "href" and value is not None:
                target = value.strip().partition("#")[0]
                if target:
                    self.targets.add(target)


def link_targets(html: str) -> set[str]:
    parser = LinkParser()
    parser.feed(html)
    parser.close()
    return parser.targets


def map(path: str, html: str) -> Iterator[tuple[str, str]]:
    source = os.path.basename(path)
    for target in sorted(link_targets(html)):
        yield target, source


def reduce(target: str, sources: Iterable[str]) -> Iterator[list[str]]:
    yield sorted(set(sources))
