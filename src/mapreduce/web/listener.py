"""The embedded cluster's status pages, served from their first visit.

:class:`LazyStatusServer` binds its port at once (its address is known, and a
port that is taken fails at once), but imports the HTTP server and the pages
(``http.server``, ``email``, ``html``...: about 0.015 s of CPU) and starts
serving only when the first connection comes.  ``mapreduce run`` would otherwise
spend that time while its workers register and its first tasks start, in the
process that answers them; most runs are never looked at.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import selectors
import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mapreduce.master.driver import MasterDriver
    from mapreduce.web.server import StatusServer


def status_token(secret: bytes) -> str:
    """What a browser holds instead of the secret (in its cookie, or in a ?token= link)."""
    return hmac.new(secret, b"mapreduce status pages", hashlib.sha256).hexdigest()


class LazyStatusServer:
    """A :class:`~mapreduce.web.server.StatusServer` (plain HTTP) made at its first
    connection, on a port bound now: the same ``port``, ``url`` and ``login_url``,
    the same pages and checks of the secret."""

    def __init__(self, driver: MasterDriver, host: str, port: int, secret: bytes = b"") -> None:
        self._driver = driver
        self._host = host
        self._secret = secret
        self._sock = socket.create_server((host, port))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}/"
        self.login_url = f"{self.url}?token={status_token(secret)}" if secret else self.url
        self.server: StatusServer | None = None  # once a connection came
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._wait, name="status-http", daemon=True)

    def _wait(self) -> None:
        """Wait for the first connection (or :meth:`stop`); then start the real server,
        which takes that connection and the next ones."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            ready = [key.fileobj for key, _ in selector.select()]
        if self._wake_r in ready:
            return
        try:
            from mapreduce.web.server import StatusServer

            self.server = StatusServer(
                self._driver, self._host, self.port, self._secret, sock=self._sock
            ).start()
        except BaseException:
            self._sock.close()  # refuse connections rather than leave them waiting
            raise

    def start(self) -> LazyStatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        if self._thread.ident is not None:
            self._thread.join()  # after it, self.server is what it stays
        if self.server is not None:
            self.server.stop()  # closes the socket
        else:
            self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
