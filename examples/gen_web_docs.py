#!/usr/bin/env python3
"""Deterministic web documents as JSON lines ``{"url": ..., "text": ...}``, for term_vector.py.

Writes DOCS documents in all, spread over FILES files ``docs-00000.jsonl`` ...
in OUT_DIR, one JSON object a line.  The documents come from a dozen hosts;
each host has its own topic words, mixed with common English words and words
shared by every host, so that each host's most frequent words differ.  The
text has capitals and punctuation; the URLs vary in scheme, letter case and
port (``https://WWW.Host.example:8443/...`` is host ``www.host.example``).
About 1 record in 100 (``--malformed``) is valid JSON but not a usable
document: no ``url``, a URL without a host, a ``text`` that is not a string,
or not an object at all.  Every file is generated from its own seed, derived
from (seed, file number), so the output depends only on the arguments.
Standard library only.

Usage: python examples/gen_web_docs.py OUT_DIR --docs 10000 [--files 4] [--seed 1]
    [--malformed 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from typing import Any


def words(text: str) -> list[str]:
    return text.split()


COMMON = words(
    "the of and to a in is it that for was on with as be at by this had not but from or have "
    "an they which one you were all we her she there would their"
)
SHARED = words("data page news home service online system time world people")
SYLLABLES = words("ka lo mi ne ru sa te vo zi pa qu ben dor fal gim hus")
HOSTS = [
    "www.alpha.example",
    "blog.alpha.example",
    "beta.example",
    "gamma.example.org",
    "delta.example.net",
    "news.epsilon.example",
    "zeta.example",
    "eta.example.com",
    "theta.example",
    "iota.example",
    "kappa.example",
    "lambda.example",
]


def topic_words(rng: random.Random) -> list[str]:
    return ["".join(rng.choices(SYLLABLES, k=rng.randrange(2, 4))) for _ in range(12)]


def url(rng: random.Random, host: str, number: int) -> str:
    scheme = rng.choice(["http", "https", "https"])
    if rng.random() < 0.1:
        host = host.upper()
    if rng.random() < 0.1:
        host += ":8443"
    return f"{scheme}://{host}/articles/{number}.html?ref={rng.randrange(100)}#top"


def text(rng: random.Random, topic: list[str]) -> str:
    sentences = []
    for _ in range(rng.randrange(1, 6)):
        words = []
        for _ in range(rng.randrange(4, 16)):
            roll = rng.random()
            if roll < 0.5:
                words.append(rng.choice(COMMON))
            elif roll < 0.7:
                words.append(rng.choice(SHARED))
            else:
                # Topic words follow a steep law, so the top words are well separated.
                words.append(topic[min(int(rng.expovariate(0.5)), len(topic) - 1)])
        sentence = " ".join(words)
        sentences.append(sentence[0].upper() + sentence[1:] + rng.choice([".", "!", "?", ";"]))
    return " ".join(sentences)


def malformed(rng: random.Random, document: dict[str, Any]) -> Any:
    kind = rng.randrange(4)
    if kind == 0:
        return {"text": document["text"]}
    if kind == 1:
        return {"url": "/relative/path.html", "text": document["text"]}
    if kind == 2:
        return {"url": document["url"], "text": len(document["text"])}
    return [document["url"], document["text"]]


def write_file(path: str, file_seed: str, count: int, first: int, bad_fraction: float) -> int:
    """Write ``count`` documents numbered from ``first``; return how many are malformed."""
    rng = random.Random(file_seed)
    topics = {host: topic_words(random.Random(f"topic-{host}")) for host in HOSTS}
    bad = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for number in range(first, first + count):
            host = rng.choice(HOSTS)
            record: Any = {"url": url(rng, host, number), "text": text(rng, topics[host])}
            if rng.random() < bad_fraction:
                record = malformed(rng, record)
                bad += 1
            out.write(json.dumps(record) + "\n")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to write the files to (created)")
    parser.add_argument("--docs", type=int, required=True, help="documents in all")
    parser.add_argument("--files", type=int, default=4, help="number of files (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--malformed", type=float, default=0.01, help="fraction of malformed records (0.01)"
    )
    args = parser.parse_args(argv)
    if args.docs < 0 or args.files < 1 or not 0 <= args.malformed <= 1:
        parser.error("need --docs >= 0, --files >= 1 and 0 <= --malformed <= 1")
    os.makedirs(args.out_dir, exist_ok=True)
    bad = 0
    first = 0
    for i in range(args.files):
        count = args.docs // args.files + (1 if i < args.docs % args.files else 0)
        path = os.path.join(args.out_dir, f"docs-{i:05d}.jsonl")
        bad += write_file(path, f"web-docs-{args.seed}-{i}", count, first, args.malformed)
        first += count
    print(
        f"wrote {args.docs} documents ({bad} malformed) in {args.files} files to {args.out_dir}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
