"""The workers' own metrics port, for a machine that runs workers (and the scheduler) without a web
server: `GET /metrics` on WORKER_METRICS_HOST:WORKER_METRICS_PORT serves what every process of the
machine wrote into PROMETHEUS_MULTIPROC_DIR, behind a bearer token of its own
(WORKER_METRICS_TOKEN), required unless it listens on a loopback address. Not the web's
METRICS_TOKEN: this port is plain HTTP, and that token, which reads every web machine's /metrics
(over HTTPS only, docs/design.md "Metrics"), would cross the network in clear with each scrape.
Production refuses the two equal (config/settings/production.py).

It runs as a fork process of `rundramatiq` (config.metrics.worker asks Dramatiq for it), outside
Django: it reads the environment only, so it imports nothing of Django's. Off by default: on a
machine with a web server, `/metrics` already shows these files, and scraping both would count
them twice.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger(__name__)


def bearer_token_matches(authorization: str, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    scheme, _, offered = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), token.encode())


def loopback(host: str) -> bool:
    """An address only this machine reaches (not 0.0.0.0, which listens on every interface)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, *args: object, directory: str, token: str, **kwargs: object) -> None:
        self.directory, self.token = directory, token
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self._answer(
                404, "application/json", b'{"error": {"code": "not_found", "message": "Not found."}}'
            )
            return
        if self.token and not bearer_token_matches(self.headers.get("Authorization", ""), self.token):
            body = b'{"error": {"code": "unauthorized", "message": "A valid bearer token is required."}}'
            self._answer(401, "application/json", body, {"WWW-Authenticate": 'Bearer realm="metrics"'})
            return
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        from config.metrics import dead_processes

        registry = CollectorRegistry()
        dead_processes.collect(registry, self.directory)
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._answer(200, content_type, encoder(registry))

    def _answer(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # every scrape is not news
        logger.debug(format, *args)


def serve() -> int:
    """Dramatiq's fork function: serve until the worker stops (SIGTERM ends the process)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    host = os.environ.get("WORKER_METRICS_HOST", "127.0.0.1")
    port = int(os.environ.get("WORKER_METRICS_PORT", "0") or 0)
    token = os.environ.get("WORKER_METRICS_TOKEN", "")
    if not directory or not port:
        logger.error("worker metrics port: PROMETHEUS_MULTIPROC_DIR and WORKER_METRICS_PORT are required")
        return 1
    if not token and not loopback(host):
        logger.error("worker metrics port: refusing to serve on %s without WORKER_METRICS_TOKEN", host)
        return 1
    server = ThreadingHTTPServer((host, port), partial(_Handler, directory=directory, token=token))
    server.daemon_threads = True
    logger.info("worker metrics on http://%s:%s/metrics", host, port)
    server.serve_forever()
    return 0
