"""Count of URL access frequency (the paper's section 2.3) over web-server access logs.

Input: access logs in the Common Log Format, one request a line::

    host ident authuser [date] "METHOD URL PROTOCOL" status bytes

optionally followed, as in the Combined Log Format, by the quoted referer and
user agent.  The request may also be ``"METHOD URL"`` (HTTP/0.9).  The URL is
counted exactly as the request line gives it, query string included.  ``map``
emits ``(URL, 1)`` for every request; ``combine`` and ``reduce`` add them up.

Malformed lines (blank lines, lines not in that format, a request that does
not name a URL such as ``"-"``, a status that is not three digits) are skipped
and counted in the user counter ``malformed lines``, which the run prints and
writes to ``OUTPUT/_summary.json``; they never fail the job.

    python examples/gen_access_logs.py /tmp/access-logs --lines 1000000 --files 4
    mapreduce run examples/url_frequency.py --input /tmp/access-logs \\
        --output /tmp/url-frequency --reducers 2 --local

Output: ``URL<TAB>count`` lines, one per distinct URL, each part file sorted by URL.
"""

import re
from collections.abc import Iterable, Iterator

import mapreduce

LOG_LINE = re.compile(
    r"(?P<host>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<date>[^\]]*)\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-)'
    r'(?: "[^"]*" "[^"]*")?'
)


def request_url(line: str) -> str | None:
    """The URL a log line requests, or None when the line is malformed."""
    match = LOG_LINE.fullmatch(line)
    if match is None:
        return None
    parts = match.group("request").split(" ")
    if len(parts) not in (2, 3) or not all(parts):
        return None
    return parts[1]


def map(key: tuple[str, int], line: str) -> Iterator[tuple[str, int]]:
    url = request_url(line)
    if url is None:
        mapreduce.increment_counter("malformed lines")
        return
    yield url, 1


def combine(url: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)


def reduce(url: str, counts: Iterable[int]) -> Iterator[int]:
    yield sum(counts)
