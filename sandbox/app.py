"""The WSGI application: routing, auth, and fault injection around every partner API call.

Order of one call: auth (401) -> rotated key (auth failure window: 401 or 403) -> count ->
latency -> 429 -> 5xx before commit -> handler (the commit) -> timeout/drop after commit
(writes) -> 5xx after commit -> garbage values in a success body. Dropping a connection is
done by raising ECONNRESET from the WSGI callable: cheroot then closes the socket without
writing a response, which is what a client sees when a partner dies mid-request.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.clock import PartnerClock
from sandbox.faults import Faults
from sandbox.garbage import garble
from sandbox.store import Store
from sandbox.wire import CallContext, Route, WireProtocol

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger(__name__)

RETRY_AFTER_S = (1, 30)  # before time_scale


class SandboxApp:
    def __init__(
        self,
        *,
        protocol: WireProtocol,
        control_routes: list[Route],
        faults: Faults,
        clock: PartnerClock,
        store: Store,
        api_key: str,
        hang_s: float,
        stopping: threading.Event,
    ) -> None:
        self.protocol = protocol
        self.faults = faults
        self.clock = clock
        self.store = store
        self.api_key = api_key
        self.hang_s = hang_s
        self.stopping = stopping
        self.api_routes = {r.endpoint: r for r in protocol.routes()}
        self.control_routes = {r.endpoint: r for r in control_routes}
        self.url_map = Map(
            [
                Rule(r.path, methods=list(r.methods), endpoint=r.endpoint)
                for r in [*self.api_routes.values(), *self.control_routes.values()]
            ],
            strict_slashes=False,
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)  # may raise ConnectionResetError: drop, no response
        # Every answer carries the partner's clock, skew included.
        response.headers["Date"] = self.clock.http_date()
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            return self.protocol.error(404, "not_found", "no such resource")
        except MethodNotAllowed as exc:
            response = self.protocol.error(405, "method_not_allowed", "method not allowed")
            response.headers["Allow"] = ", ".join(exc.valid_methods or [])
            return response
        if not self.protocol.authenticate(request, self.api_key):
            return self.protocol.error(401, "unauthorized", "missing or invalid API key")
        try:
            if endpoint in self.control_routes:
                return self.control_routes[endpoint].handler(request, **args)
            if self.faults.window_open("auth_failure_window_s"):
                self.store.bump("faults", "auth_failure")
                return self.protocol.auth_failure()
            return self.call(self.api_routes[endpoint], request, args)
        except ConnectionResetError:
            raise
        except Exception:
            logger.exception("sandbox handler failed: %s %s", request.method, request.path)
            return self.protocol.error(500, "internal_error", "unexpected partner failure")

    def call(self, route: Route, request: Request, args: dict[str, object]) -> Response:
        self.store.bump("calls", f"{request.method} {route.path}")
        settings = self.faults.settings
        latency_s = self.faults.scaled(self.faults.uniform(*settings.latency_ms) / 1000)
        ctx = CallContext(latency_s=latency_s, stopping=self.stopping)
        if latency_s > 0:
            self.store.bump("faults", "latency")
        if self.faults.chance("rate_limit_rate"):
            ctx.pause()
            self.store.bump("faults", "rate_limit")
            retry_after = math.ceil(self.faults.scaled(self.faults.randint(*RETRY_AFTER_S)))
            return self.protocol.rate_limited(max(1, retry_after))
        error_5xx = self.faults.chance("error_5xx_rate")
        after_commit = error_5xx and self.faults.coin()
        if error_5xx and not after_commit:
            ctx.pause()
            self.store.bump("faults", "error_5xx_before_commit")
            return self.protocol.server_error()
        if not route.late_pause:
            ctx.pause()
        response = route.handler(request, ctx, **args)
        ctx.pause()
        if route.write and response.status_code < 400 and self.faults.chance("timeout_after_commit_rate"):
            self.store.bump("faults", "timeout_after_commit")
            self.hang_and_drop()
        if after_commit:
            self.store.bump("faults", "error_5xx_after_commit")
            return self.protocol.server_error_after_commit(request, response)
        if response.status_code < 300 and self.faults.chance("garbage_values_rate"):
            self.spoil(response)
        return response

    def spoil(self, response: Response) -> None:
        """Out-of-range values in every reservation of a success body (`garbage_values_rate`)."""
        body = response.get_json()
        spoiled = [
            garble(obj, self.protocol.garbage, self.faults) for obj in self.protocol.reservation_objects(body)
        ]
        if any(spoiled):
            response.set_data(json.dumps(body, separators=(",", ":")))
            self.store.bump("faults", "garbage_values")

    def hang_and_drop(self) -> None:
        """Committed; now outlast any client timeout, then drop the connection unanswered."""
        self.stopping.wait(self.hang_s)
        raise ConnectionResetError(errno.ECONNRESET, "sandbox: dropped after commit")
