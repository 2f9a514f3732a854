"""The master's HTTP server: status pages, JSON API, ``/metrics`` and ``/health``.

Routes:

=======================================  ===========================================
``/``                                    cluster overview: workers and jobs (HTML)
``/jobs/JOB``                            one job in detail (HTML)
``/jobs/JOB/tasks/TASK``                 every attempt of a task with its log (HTML)
``/api/cluster``                         the cluster overview (JSON)
``/api/jobs/JOB``                        one job in detail (JSON)
``/api/jobs/JOB/tasks/TASK/logs``        the task's attempts and logs (JSON)
``/metrics``                             Prometheus metrics (:mod:`mapreduce.web.metrics`)
``/health``                              ``ok (leader)`` or ``ok (follower)``
``/login``                               a form for the cluster secret (sets a cookie)
=======================================  ===========================================

With a cluster secret, every route but ``/health`` and ``/login`` needs it:
``Authorization: Bearer SECRET`` (scripts, Prometheus), or the cookie that
``/login`` or a ``?token=TOKEN`` link sets (browsers; the token is an HMAC of
the secret, so the secret itself is not in URLs or cookies).
"""

from __future__ import annotations

import hmac
import html
import json
import os
import selectors
import socket
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mapreduce.master.driver import MasterDriver
from mapreduce.web import pages, views
from mapreduce.web.listener import status_token


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
            # prometheus-client is imported at the first scrape, not with the page
            from prometheus_client import CONTENT_TYPE_LATEST

            from mapreduce.web import metrics

            return HTTPStatus.OK, CONTENT_TYPE_LATEST, metrics.exposition(driver)
    raise KeyError(path)


_COOKIE = "mapreduce_token"
_LOGIN_FORM = """<!doctype html><html><head><title>mapreduce: log in</title></head><body>
<h1>mapreduce</h1><p>{message}</p>
<form method="post" action="/login"><label>Cluster secret
<input type="password" name="secret" autofocus></label> <button>Log in</button></form>
</body></html>"""


def _handler(driver: MasterDriver, secret: bytes) -> Callable[..., BaseHTTPRequestHandler]:
    token = status_token(secret) if secret else ""

    class Handler(BaseHTTPRequestHandler):
        server_version = "mapreduce"

        def _authorised(self) -> bool:
            if not secret:
                return True
            bearer = self.headers.get("Authorization", "")
            if bearer.startswith("Bearer ") and hmac.compare_digest(
                bearer[7:].strip().encode(), secret
            ):
                return True
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            held = cookie[_COOKIE].value if _COOKIE in cookie else ""
            return hmac.compare_digest(held.encode(), token.encode())

        def _send(
            self, status: int, content_type: str, body: str, headers: dict[str, str] | None = None
        ) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _log_in(self, location: str) -> None:
            cookie = f"{_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            self._send(
                HTTPStatus.SEE_OTHER, "text/plain", "", {"Set-Cookie": cookie, "Location": location}
            )

        def do_POST(self) -> None:
            if self.path.split("?")[0] != "/login" or not secret:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", "not found\n")
                return
            length = min(int(self.headers.get("Content-Length") or 0), 4096)
            offered = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            given = (offered.get("secret") or [""])[0].strip().encode()
            if hmac.compare_digest(given, secret):
                self._log_in("/")
            else:
                page = _LOGIN_FORM.format(message="That is not the cluster secret.")
                self._send(HTTPStatus.UNAUTHORIZED, "text/html; charset=utf-8", page)

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if secret and path not in ("/health", "/login"):
                offered = (parse_qs(query).get("token") or [""])[0]
                if offered and hmac.compare_digest(offered.encode(), token.encode()):
                    self._log_in(path)  # a link with the token: keep it in a cookie
                    return
                if not self._authorised():
                    if path.startswith("/api/") or path == "/metrics":
                        self._send(
                            HTTPStatus.UNAUTHORIZED,
                            "application/json",
                            json.dumps({"error": "the cluster secret is needed"}),
                            {"WWW-Authenticate": "Bearer"},
                        )
                    else:
                        self._send(HTTPStatus.SEE_OTHER, "text/plain", "", {"Location": "/login"})
                    return
            if path == "/login":
                message = "Give the cluster secret." if secret else "No secret is needed here."
                page = _LOGIN_FORM.format(message=html.escape(message))
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", page)
                return
            try:
                status, content_type, body = _route(driver, self.path)
            except KeyError as exc:
                status, content_type = HTTPStatus.NOT_FOUND, "text/plain"
                body = f"not found: {exc}\n"
            except Exception as exc:  # a bug: answer 500 and keep serving
                status, content_type = HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain"
                body = f"internal error: {type(exc).__name__}: {exc}\n"
            self._send(status, content_type, body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log on stderr

    return Handler


class StatusServer:
    """Serves the status pages of ``driver`` on ``host:port`` (port 0: any free port).

    With ``secret``, pages need it (see the module's docstring); ``login_url`` is
    the overview with a ``?token=`` that logs a browser in.  With ``sock`` (a
    listening socket bound to ``host:port``) it serves on that socket instead of
    binding one (see :class:`~mapreduce.web.listener.LazyStatusServer`).
    """

    def __init__(
        self,
        driver: MasterDriver,
        host: str,
        port: int,
        secret: bytes = b"",
        tls: tuple[str, str] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        if sock is None:
            self.httpd = ThreadingHTTPServer((host, port), _handler(driver, secret))
        else:
            self.httpd = ThreadingHTTPServer(
                (host, port), _handler(driver, secret), bind_and_activate=False
            )
            self.httpd.socket.close()  # the one it made, unbound
            self.httpd.socket = sock
            self.httpd.server_address = sock.getsockname()
            self.httpd.server_name, self.httpd.server_port = host, self.httpd.server_address[1]
        self.httpd.daemon_threads = True
        scheme = "http"
        if tls is not None:  # HTTPS with the master's certificate (cert file, key file)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.port = self.httpd.server_address[1]
        self.url = f"{scheme}://{host}:{self.port}/"
        self.login_url = f"{self.url}?token={status_token(secret)}" if secret else self.url
        self.httpd.timeout = 1.0  # handle_request() never blocks longer
        # serve_forever() would notice a shutdown only at its next poll: this loop also
        # waits on a pipe that stop() writes to, so it ends at once and never polls.
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="status-http", daemon=True)

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.httpd, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = [key.fileobj for key, _ in selector.select()]
                if self._wake_r in ready:
                    return
                self.httpd.handle_request()  # a connection is waiting: take it

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        if self._thread.ident is not None:
            self._thread.join()
        self.httpd.server_close()
        os.close(self._wake_r)
        os.close(self._wake_w)
