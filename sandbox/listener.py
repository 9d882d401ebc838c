"""The partner's HTTP port, which an outage window closes and reopens.

An outage refuses connections: the cheroot server is stopped (its listening socket closed, its
connections dropped) and a fresh one binds the same port when the window ends. The control
endpoints share the port, so they are down too; nothing needs to reach the process to end the
outage, since the window is fixed in advance when it is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cheroot.wsgi import Server as WSGIServer

from sandbox.faults import Faults
from sandbox.store import Store

logger = logging.getLogger("sandbox")

JOIN_TIMEOUT_S = 5.0
IDLE_WAIT_S = 1.0
REBIND_RETRY_S = 0.1


class Listener:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        app: Callable[..., object],
        threads: int,
        server_name: str,
        faults: Faults,
        store: Store,
        stopping: threading.Event,
    ) -> None:
        self.host = host
        self.port = port
        self.app = app
        self.threads = threads
        self.server_name = server_name
        self.faults = faults
        self.store = store
        self.stopping = stopping
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the port, unless an outage window given at start keeps it closed."""
        if self.faults.window_open("outage_window_s"):
            self._count_outage()
        else:
            self.open()  # binds now, so a busy port fails here, in the caller

    def open(self) -> None:
        """Bind and serve."""
        server = WSGIServer(
            (self.host, self.port),
            self.app,
            numthreads=self.threads,
            server_name=self.server_name,
            shutdown_timeout=JOIN_TIMEOUT_S,
        )
        server.prepare()
        self.port = server.bind_addr[1]  # the real one, when asked for port 0
        self._thread = threading.Thread(target=server.serve, name="sandbox-http", daemon=True)
        self._thread.start()
        self._server = server

    def stop(self) -> None:
        """Shut down for good (process stop): waits for the requests in flight."""
        with self._lock:
            if self._server is not None:
                self._server.stop()
                if self._thread is not None:
                    self._thread.join(JOIN_TIMEOUT_S)
                self._server = None

    def watch_outage(self) -> float:
        """Worker step: keep the port closed while the outage window is open; return the wait."""
        window = self.faults.window("outage_window_s")
        now = time.time()
        with self._lock:
            if self.stopping.is_set():
                return IDLE_WAIT_S
            down = window is not None and window[0] <= now < window[1]
            if down and self._server is not None:
                self._go_down()
            elif not down and self._server is None:
                try:
                    self.open()
                except OSError:
                    logger.exception("sandbox could not reopen port %s after the outage", self.port)
                    return REBIND_RETRY_S
                logger.info("sandbox outage over: port %s open again", self.port)
        upcoming = [moment - now for moment in window or () if moment > now]
        return min([IDLE_WAIT_S, *upcoming])

    def _go_down(self) -> None:
        assert self._server is not None
        server, self._server = self._server, None
        # Stopping closes the listening socket at once, then waits for requests in flight (a
        # hung one for up to --hang-s): that wait happens off this thread, so the port can
        # reopen on time.
        threading.Thread(target=server.stop, name="sandbox-http-close", daemon=True).start()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while server.socket is not None and time.monotonic() < deadline:
            time.sleep(0.005)
        self._count_outage()

    def _count_outage(self) -> None:
        self.store.bump("faults", "outage")
        logger.info("sandbox outage: port %s refuses connections", self.port)
