"""The master's HTTP server: status pages, JSON API, ``/metrics`` and ``/health``.

Routes:

=======================================  ===========================================
``/``                                    cluster overview: workers and jobs (HTML)
``/jobs/JOB``                            one job in detail (HTML)
``/jobs/JOB/tasks/TASK``                 every attempt of a task with its log (HTML)
``/api/cluster``                         the cluster overview (JSON)
``/api/jobs/JOB``                        one job in detail (JSON)
``/api/jobs/JOB/tasks/TASK/logs``        the task's attempts and logs (JSON)
``/metrics``                             Prometheus text metrics
``/health``                              ``ok``
=======================================  ===========================================
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from mapreduce.master.driver import MasterDriver
from mapreduce.web import pages, views


def _route(driver: MasterDriver, path: str) -> tuple[int, str, str]:
    """``(status, content type, body)`` for a GET of ``path``."""
    parts = [unquote(p) for p in urlsplit(path).path.split("/") if p]
    html, js = "text/html; charset=utf-8", "application/json"

    def as_json(data: Any) -> tuple[int, str, str]:
        return HTTPStatus.OK, js, json.dumps(data, indent=1)

    if parts == ["health"]:
        return HTTPStatus.OK, "text/plain", f"ok ({driver.role()})\n"
    if not driver.serving.is_set():  # a master candidate that does not lead: say who does
        reason = driver.not_serving_reason()
        if parts[:1] == ["api"]:
            return HTTPStatus.SERVICE_UNAVAILABLE, js, json.dumps({"error": reason})
        return HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", reason + "\n"
    match parts:
        case []:
            return HTTPStatus.OK, html, pages.cluster_page(views.cluster_view(driver))
        case ["jobs", job_id]:
            return HTTPStatus.OK, html, pages.job_page(views.job_view(driver, job_id))
        case ["jobs", job_id, "tasks", task]:
            return HTTPStatus.OK, html, pages.logs_page(views.task_logs_view(driver, job_id, task))
        case ["api", "cluster"]:
            return as_json(views.cluster_view(driver))
        case ["api", "jobs"]:
            return as_json(views.cluster_view(driver)["jobs"])
        case ["api", "jobs", job_id]:
            return as_json(views.job_view(driver, job_id))
        case ["api", "jobs", job_id, "tasks", task, "logs"]:
            return as_json(views.task_logs_view(driver, job_id, task))
        case ["metrics"]:
            return HTTPStatus.OK, "text/plain; version=0.0.4", views.metrics_text(driver)
    raise KeyError(path)


def _handler(driver: MasterDriver) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mapreduce"

        def do_GET(self) -> None:
            try:
                status, content_type, body = _route(driver, self.path)
            except KeyError as exc:
                status, content_type = HTTPStatus.NOT_FOUND, "text/plain"
                body = f"not found: {exc}\n"
            except Exception as exc:  # a bug: answer 500 and keep serving
                status, content_type = HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain"
                body = f"internal error: {type(exc).__name__}: {exc}\n"
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log on stderr

    return Handler


class StatusServer:
    """Serves the status pages of ``driver`` on ``host:port`` (port 0: any free port)."""

    def __init__(self, driver: MasterDriver, host: str, port: int) -> None:
        self.httpd = ThreadingHTTPServer((host, port), _handler(driver))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one interval
            name="status-http",
            daemon=True,
        )

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
