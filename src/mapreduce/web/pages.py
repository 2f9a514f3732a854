"""HTML rendering of the view models: self-contained pages (no CDN), refreshing themselves."""

from __future__ import annotations

from html import escape
from typing import Any

REFRESH_SECONDS = 2

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.bar { width: 320px; height: 16px; background: #eee; border: 1px solid #bbb; display: inline-block;
       vertical-align: middle; }
.fill { height: 100%; background: #3a7bd5; }
.state-succeeded, .state-alive, .state-completed { color: #17702a; }
.state-failed, .state-lost, .state-killed { color: #b00020; }
.state-running, .state-in_progress { color: #0b57a4; }
pre { background: #f7f7f7; padding: .5em; max-height: 20em; overflow: auto; margin: 0; }
.muted { color: #777; }
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<p class='muted'><a href='/'>cluster</a> · <a href='/metrics'>metrics</a> · "
        f"JSON: <a href='/api/cluster'>/api/cluster</a></p>{body}</body></html>"
    )


def _table(headers: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f" id='{table_id}'" if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


def _state(state: str) -> str:
    return f"<span class='state-{escape(state)}'>{escape(state)}</span>"


def _bytes(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


def _job_link(job: dict[str, Any]) -> str:
    return f"<a href='/jobs/{escape(job['id'])}'>{escape(job['id'])}</a>"


def cluster_page(view: dict[str, Any]) -> str:
    workers = [
        [
            escape(w["id"]),
            escape(w["address"]),
            _state(w["state"]),
            f"{w['last_heartbeat_seconds']:.1f} s",
            str(w["tasks_done"]),
            str(len(w["running"])),
            escape(", ".join(w["running"]) or w["reason"]),
        ]
        for w in view["workers"]
    ]
    jobs = [
        [
            _job_link(j),
            _state(j["state"]),
            escape(j["job_file"]),
            f"{j['maps']['completed']}/{j['maps']['total']}",
            f"{j['reduces']['completed']}/{j['reduces']['total']}",
            str(j["failed_attempts"]),
            f"{j['elapsed_seconds']:.1f} s",
            escape(j["reason"].splitlines()[0] if j["reason"] else ""),
        ]
        for j in reversed(view["jobs"])
    ]
    body = (
        "<h1>mapreduce master</h1>"
        f"<p>up {view['uptime_seconds']:.0f} s, <span id='workers-alive'>"
        f"{sum(w['state'] == 'alive' for w in view['workers'])}</span> workers alive</p>"
        + (
            "<p id='chaos'>fault injection (--chaos): "
            + escape(", ".join(f"{k} {v}" for k, v in view["chaos"].items()))
            + "</p>"
            if view.get("chaos")
            else ""
        )
        + "<h2>Workers</h2>"
        + _table(
            ["worker", "address", "state", "last heartbeat", "tasks done", "running", "current"],
            workers,
            "workers",
        )
        + "<h2>Jobs</h2>"
        + _table(
            [
                "job",
                "state",
                "job file",
                "maps",
                "reduces",
                "failed attempts",
                "duration",
                "reason",
            ],
            jobs,
            "jobs",
        )
    )
    return _page("mapreduce master", body)


def _bar(kind: str, done: int, total: int) -> str:
    percent = 100.0 * done / total if total else 100.0
    return (
        f"<tr><th>{kind}</th><td><span class='bar'><span class='fill' "
        f"style='width:{percent:.1f}%;display:block'></span></span></td>"
        f"<td><span id='{kind}-done'>{done}</span>/<span id='{kind}-total'>{total}</span> "
        f"({percent:.0f}%)</td></tr>"
    )


def job_page(view: dict[str, Any]) -> str:
    maps, reduces = view["maps"], view["reduces"]
    eta = "" if view["eta_seconds"] is None else f", about {view['eta_seconds']:.0f} s left"
    states = _table(
        ["", "idle", "in progress", "completed", "total"],
        [
            [kind, str(c["idle"]), str(c["in_progress"]), str(c["completed"]), str(c["total"])]
            for kind, c in (("map", maps), ("reduce", reduces))
        ],
    )
    data = _table(
        ["", "input", "intermediate", "output"],
        [
            [
                "bytes",
                f"{_bytes(view['bytes']['input_done'])} of {_bytes(view['bytes']['input_total'])}",
                _bytes(view["bytes"]["intermediate"]),
                _bytes(view["bytes"]["output"]),
            ],
            [
                "records",
                str(view["records"]["input"]),
                str(view["records"]["intermediate"]),
                str(view["records"]["output"]),
            ],
        ],
    )
    counters = _table(
        ["counter", "value"],
        [
            [escape(name), f"<span data-counter='{escape(name)}'>{value}</span>"]
            for name, value in view["counters"].items()
        ],
        "counters",
    )
    system = _table(
        ["system counter", "value"],
        [[escape(k), str(v)] for k, v in view["system_counters"].items()],
    )
    failures = (
        "".join(
            f"<h3>{escape(f['task'])} attempt {f['attempt']} on {escape(f['worker'])}"
            + (f", record {escape(f['record'])}" if f["record"] else "")
            + f"</h3><p>{escape(f['reason'])} (<a href='/jobs/{escape(view['id'])}/tasks/"
            f"{escape(f['task'])}'>logs</a>)</p><pre>{escape(f['traceback'])}</pre>"
            for f in view["failures"]
        )
        or "<p>none</p>"
    )
    skipped = (
        _table(
            ["task", "record", "reason"],
            [
                [escape(s["task"]), escape(s["record"]), escape(s["reason"])]
                for s in view["skipped_records"]
            ],
        )
        if view["skipped_records"]
        else "<p>none</p>"
    )
    tasks = _table(
        ["task", "state", "attempts (worker, state, seconds)", "input", "output", "records"],
        [
            [
                f"<a href='/jobs/{escape(view['id'])}/tasks/{escape(t['id'])}'>"
                f"{escape(t['id'])}</a>",
                _state(t["state"]),
                "<br>".join(
                    f"#{a['attempt']} {escape(a['worker'])} {_state(a['state'])}"
                    + (" backup" if a["backup"] else "")
                    + ("" if a["seconds"] is None else f" {a['seconds']:.2f}s")
                    for a in t["attempts"]
                ),
                _bytes(t["input_bytes"]),
                _bytes(t["output_bytes"]),
                "" if t["output_records"] is None else str(t["output_records"]),
            ]
            for t in view["tasks"]
        ],
        "tasks",
    )
    body = (
        f"<h1>job {escape(view['id'])}: <span id='job-state'>{_state(view['state'])}</span></h1>"
        f"<p>{escape(view['job_file'])} → {escape(view['output'])}</p>"
        + (f"<pre>{escape(view['reason'])}</pre>" if view["reason"] else "")
        + f"<p>elapsed {view['elapsed_seconds']:.1f} s{eta}; "
        f"{view['rates']['input_bytes_per_second'] / 1e6:.2f} MB/s, "
        f"{view['rates']['input_records_per_second']:.0f} records/s of input</p>"
        "<table>"
        + _bar("map", maps["completed"], maps["total"])
        + _bar("reduce", reduces["completed"], reduces["total"])
        + "</table>"
        + "<h2>Tasks by state</h2>"
        + states
        + "<h2>Data</h2>"
        + data
        + "<h2>Counters</h2>"
        + counters
        + system
        + f"<h2>Failed attempts ({len(view['failures'])})</h2>"
        + failures
        + "<h2>Skipped records</h2>"
        + skipped
        + f"<h2>Tasks ({view['tasks_listed']} of {view['tasks_total']})</h2>"
        + tasks
    )
    return _page(f"job {view['id']}", body)


def logs_page(view: dict[str, Any]) -> str:
    parts = [
        f"<h1>{escape(view['task'])} of job <a href='/jobs/{escape(view['job'])}'>"
        f"{escape(view['job'])}</a></h1>"
    ]
    for a in view["attempts"]:
        parts.append(
            f"<h2>attempt {a['attempt']} on {escape(a['worker'])}: {_state(a['state'])}</h2>"
            f"<pre>{escape(a['log']) or '(no output)'}</pre>"
            + (f"<pre>{escape(a['error'])}</pre>" if a["error"] else "")
        )
    return _page(f"{view['task']} logs", "".join(parts))
