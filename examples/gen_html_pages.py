#!/usr/bin/env python3
"""Deterministic HTML pages that link to each other, for reverse_links.py.

Writes PAGES pages ``page-0000.html`` ... into OUT_DIR.  Each page has up to a
dozen links, mostly to other pages of the set (a few popular pages attract
most links), some to pages that do not exist and to external URLs.  The links
are written in the many ways HTML allows, so that a link extractor is tested:
double, single or no quotes, upper-case tags and attributes, spaces around
``=``, other attributes before ``href``, a ``#fragment``, ``&amp;`` entities,
and self-closing tags.  Each page also holds things that are *not* links to
another page: in-page ``#anchors``, ``<a name=...>`` without ``href``, an
empty ``href``, a ``data-href`` attribute, ``<link href=...>``, a link inside
an HTML comment and one inside a ``<script>``.  The output depends only on
the arguments.  Standard library only.

Usage: python examples/gen_html_pages.py OUT_DIR --pages 500 [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import sys

EXTERNAL = [
    "https://example.org/",
    "https://example.org/search?q=mapreduce&amp;lang=en",
    "http://research.example.com/pubs/mapreduce-osdi04.pdf",
    "https://en.wikipedia.org/wiki/MapReduce",
]


def page_name(number: int) -> str:
    return f"page-{number:04d}.html"


def link(rng: random.Random, target: str, text: str) -> str:
    """An ``<a>`` element linking to ``target``, written in one of several styles."""
    style = rng.randrange(8)
    if style == 0:
        return f"<A HREF='{target}'>{text}</A>"
    if style == 1 and not any(c in target for c in " \"'<>=`&"):
        return f"<a class=nav href={target}>{text}</a>"
    if style == 2:
        return f'<a href = "{target}" title="go">{text}</a>'
    if style == 3:
        return f'<a id="l{rng.randrange(1000)}" data-x=\'1\' href="{target}#section-2">{text}</a>'
    if style == 4:
        return f'<a href="{target}"/> {text}'
    return f'<a href="{target}">{text}</a>'


def page(rng: random.Random, number: int, pages: int) -> str:
    targets: list[str] = []
    for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 12])):
        roll = rng.random()
        if roll < 0.08:
            targets.append(rng.choice(EXTERNAL))
        elif roll < 0.12:
            targets.append(page_name(pages + rng.randrange(5)))  # a page that does not exist
        elif roll < 0.5:
            targets.append(page_name(rng.randrange(min(pages, 10))))  # a popular page
        else:
            targets.append(page_name(rng.randrange(pages)))
    if targets and rng.random() < 0.2:
        targets.append(targets[0])  # the same link twice
    items = "\n".join(
        f"  <li>{link(rng, target, f'link {i}')}</li>" for i, target in enumerate(targets)
    )
    hidden = page_name(rng.randrange(pages))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <title>Page {number}</title>
  <link rel="stylesheet" href="style.css">
  <script>var html = '<a href="{page_name(rng.randrange(pages))}">not a link</a>';</script>
</head>
<body>
<a name="top"></a>
<h1>Page {number}</h1>
<p>Some text about page {number}. <a href="#top">Back to top</a>
<a href="">nowhere</a> <span data-href="{hidden}">not a link</span></p>
<!-- <a href="{hidden}">a link that was commented out</a> -->
<ul>
{items}
</ul>
</body>
</html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to write the pages to (created)")
    parser.add_argument("--pages", type=int, required=True, help="number of pages")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    if args.pages < 1:
        parser.error("--pages must be at least 1")
    os.makedirs(args.out_dir, exist_ok=True)
    rng = random.Random(f"html-pages-{args.seed}")
    for number in range(args.pages):
        path = os.path.join(args.out_dir, page_name(number))
        with open(path, "w", encoding="utf-8", newline="\n") as out:
            out.write(page(rng, number, args.pages))
    print(f"wrote {args.pages} pages to {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
