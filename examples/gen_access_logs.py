#!/usr/bin/env python3
"""Deterministic web-server access logs in Common Log Format, for url_frequency.py.

Writes LINES log lines in all, spread over FILES files ``access-00000.log`` ...
in OUT_DIR.  Most lines are in the Common Log Format, some in the Combined Log
Format (which appends the quoted referer and user agent)::

    10.1.2.3 - frank [07/Mar/2004:16:05:49 +0000] "GET /products/item-0042.html HTTP/1.1" 200 5120

The requested URLs follow a Zipf-like law over a fixed site of about 500 URLs
(some with query strings).  A fraction of the lines (``--malformed``, default
0.01) is malformed: blank, garbage, cut short before the end of the request,
without the quotes around the request, with a request that names no URL, or
with a status that is not a number.  Every file is generated from its own seed,
derived from (seed, file number), so the output depends only on the arguments.
Standard library only.

Usage: python examples/gen_access_logs.py OUT_DIR --lines 100000 [--files 4] [--seed 1]
    [--malformed 0.01]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
METHODS = ["GET"] * 17 + ["POST", "POST", "HEAD"]
STATUSES = [200] * 14 + [206, 301, 304, 304, 403, 404, 404, 500]
USERS = ["-"] * 9 + ["frank", "alice", "bob"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "Googlebot/2.1"]


def site_urls() -> list[str]:
    """The site's URLs, most popular first (the same for every seed)."""
    urls = ["/", "/index.html", "/about.html", "/contact.html", "/static/css/site.css"]
    urls += [f"/products/item-{i:04d}.html" for i in range(200)]
    urls += [f"/images/photo-{i:03d}.jpg" for i in range(150)]
    urls += [f"/search?q=term{i}&page={i % 3 + 1}" for i in range(100)]
    urls += [f"/api/v1/users/{i}" for i in range(50)]
    return urls


URLS = site_urls()
URL_WEIGHTS = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(URLS))))


def timestamp(seconds: int) -> str:
    """A CLF date for ``seconds`` after 1 Jan 2004 00:00 (months of 28 days: dates stay valid)."""
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    months, day = divmod(days, 28)
    year, month = divmod(months, 12)
    return f"{day + 1:02d}/{MONTHS[month]}/{2004 + year}:{hour:02d}:{minute:02d}:{second:02d} +0000"


def good_line(rng: random.Random, seconds: int) -> str:
    host = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    url = rng.choices(URLS, cum_weights=URL_WEIGHTS)[0]
    protocol = rng.choice(["HTTP/1.0", "HTTP/1.1", "HTTP/1.1"])
    status = rng.choice(STATUSES)
    size = "-" if status == 304 else str(rng.randrange(100, 50_000))
    line = (
        f'{host} - {rng.choice(USERS)} [{timestamp(seconds)}] "{rng.choice(METHODS)} {url} '
        f'{protocol}" {status} {size}'
    )
    if rng.random() < 0.2:  # Combined Log Format: referer and user agent
        line += f' "http://www.example.com/" "{rng.choice(AGENTS)}"'
    return line


def malformed_line(rng: random.Random, seconds: int) -> str:
    line = good_line(rng, seconds)
    kind = rng.randrange(6)
    if kind == 0:
        return ""
    if kind == 1:
        return "".join(rng.choices("abcdefghij <>[]-/:0123456789", k=rng.randrange(1, 60)))
    if kind == 2:  # cut short somewhere before the request's closing quote
        return line[: rng.randrange(1, line.index('" ') + 1)]
    if kind == 3:  # the request without its quotes
        return line.replace('"', "", 2)
    if kind == 4:  # a request that names no URL (as servers log timed-out connections)
        start, end = line.index(' "'), line.index('" ')
        return line[: start + 2] + "-" + line[end:]
    status = line.index('" ') + 2
    return line[:status] + "OK" + line[status + 3 :]


def write_file(path: str, file_seed: str, count: int, malformed: float, start: int) -> int:
    """Write ``count`` lines to ``path``; return how many are malformed."""
    rng = random.Random(file_seed)
    bad = 0
    seconds = start
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for _ in range(count):
            seconds += rng.randrange(3)
            if rng.random() < malformed:
                bad += 1
                out.write(malformed_line(rng, seconds) + "\n")
            else:
                out.write(good_line(rng, seconds) + "\n")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to write the log files to (created)")
    parser.add_argument("--lines", type=int, required=True, help="log lines in all")
    parser.add_argument("--files", type=int, default=4, help="number of files (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--malformed", type=float, default=0.01, help="fraction of malformed lines (default 0.01)"
    )
    args = parser.parse_args(argv)
    if args.lines < 0 or args.files < 1 or not 0 <= args.malformed <= 1:
        parser.error("need --lines >= 0, --files >= 1 and 0 <= --malformed <= 1")
    os.makedirs(args.out_dir, exist_ok=True)
    bad = 0
    for i in range(args.files):
        count = args.lines // args.files + (1 if i < args.lines % args.files else 0)
        path = os.path.join(args.out_dir, f"access-{i:05d}.log")
        # Each file covers its own stretch of time, about a week apart.
        bad += write_file(path, f"access-logs-{args.seed}-{i}", count, args.malformed, i * 604_800)
    print(
        f"wrote {args.lines} lines ({bad} malformed) in {args.files} files to {args.out_dir}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
