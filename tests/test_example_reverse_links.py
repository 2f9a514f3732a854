"""The reverse web-link graph example against a regular-expression link scan of the pages."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.conftest import EXAMPLES, output_pairs, run_cli

GENERATOR = EXAMPLES / "gen_html_pages.py"

COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.DOTALL | re.IGNORECASE)
A_HREF = re.compile(
    r"""<a\s(?:[^>]*?\s)?href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE
)


def generate(out_dir: Path, pages: int, seed: int) -> None:
    subprocess.run(
        [sys.executable, GENERATOR, out_dir, "--pages", str(pages), "--seed", str(seed)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def expected_graph(directory: Path) -> dict[str, list[str]]:
    linked_from: defaultdict[str, set[str]] = defaultdict(set)
    for path in sorted(directory.iterdir()):
        page = SCRIPT.sub("", COMMENT.sub("", path.read_text(encoding="utf-8")))
        for quoted, single, bare in A_HREF.findall(page):
            target = html.unescape(quoted or single or bare).strip().split("#")[0]
            if target:
                linked_from[target].add(path.name)
    return {target: sorted(sources) for target, sources in linked_from.items()}


def test_generator_is_deterministic(tmp_path: Path) -> None:
    for name, seed in [("a", 2), ("b", 2), ("c", 3)]:
        generate(tmp_path / name, 30, seed)
    pages = [sorted((tmp_path / name).iterdir()) for name in "abc"]
    assert [p.name for p in pages[0]] == [f"page-{i:04d}.html" for i in range(30)]
    assert [p.read_bytes() for p in pages[0]] == [p.read_bytes() for p in pages[1]]
    assert [p.read_bytes() for p in pages[0]] != [p.read_bytes() for p in pages[2]]


def test_reverse_links_match_a_regex_scan(tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    generate(pages, 300, seed=7)
    output = tmp_path / "out"
    result = run_cli(
        "run",
        EXAMPLES / "reverse_links.py",
        "--input",
        pages,
        "--output",
        output,
        "--reducers",
        "3",
        "--local",
    )
    assert result.returncode == 0, result.stderr
    expected = expected_graph(pages)
    got = {target: json.loads(sources) for target, sources in output_pairs(output).items()}
    assert got == expected
    # The generated pages exercise what the job must (and must not) count as links.
    assert "https://example.org/search?q=mapreduce&lang=en" in got
    assert any(not (pages / target).exists() for target in got)  # dangling links
    assert not {"", "#top", "style.css"} & got.keys()
    assert max(len(sources) for sources in got.values()) > 20  # popular pages
    for part in output.glob("part-*"):
        targets = [line.split("\t")[0] for line in part.read_text().splitlines()]
        assert targets == sorted(targets)
