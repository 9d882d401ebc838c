"""`/_sandbox/*`: faults at run time, ground truth and stats; behind the partner's API key.

These are the sandbox's own endpoints, not the partner API, so no fault applies to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.faults import WINDOW_KEYS, Faults, FaultSettingError
from sandbox.ledger import Ledger, Product
from sandbox.store import Store
from sandbox.wire import (
    BadRequest,
    ReservationWire,
    Route,
    WireProtocol,
    json_response,
    read_json_object,
)


class Control:
    def __init__(
        self,
        *,
        protocol: WireProtocol,
        store: Store,
        faults: Faults,
        info: dict[str, Any],
        truth: Sequence[Route],
        on_faults_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.protocol = protocol
        self.store = store
        self.faults = faults
        self.info = info
        self.truth = truth  # the profile's ground-truth endpoints
        self._on_faults_changed = on_faults_changed

    def routes(self) -> list[Route]:
        return [
            Route("/_sandbox/faults", ("GET",), "sandbox_faults", self.get_faults),
            Route("/_sandbox/faults", ("POST",), "sandbox_set_faults", self.set_faults),
            *self.truth,
            Route("/_sandbox/stats", ("GET",), "sandbox_stats", self.stats),
            Route("/_sandbox/reset", ("POST",), "sandbox_reset", self.reset),
            Route("/_sandbox/info", ("GET",), "sandbox_info", self.get_info),
        ]

    def get_faults(self, request: Request) -> Response:
        return json_response(200, self.faults.settings.as_json())

    def set_faults(self, request: Request) -> Response:
        try:
            settings = self.faults.update(read_json_object(request))
        except BadRequest as exc:
            return self.protocol.error(400, exc.code, exc.message)
        except FaultSettingError as exc:
            return self.protocol.error(400, "invalid_fault", str(exc))
        self._on_faults_changed()
        return json_response(200, settings.as_json())

    def stats(self, request: Request) -> Response:
        counters = self.store.counters()
        events = {
            row["status"]: row["n"]
            for row in self.store.query("SELECT status, COUNT(*) AS n FROM webhook_events GROUP BY status")
        }
        attempts = [
            dict(row)
            for row in self.store.query(
                "SELECT a.event_id, e.reservation_id, e.version, a.attempt, a.at, "
                "a.response_code, a.error, a.duration_ms FROM webhook_attempts AS a "
                "LEFT JOIN webhook_events AS e ON e.event_id = a.event_id ORDER BY a.seq"
            )
        ]
        return json_response(
            200,
            {
                "profile": self.protocol.name,
                "calls": counters.get("calls", {}),
                "faults": counters.get("faults", {}),
                "outcomes": counters.get("outcomes", {}),
                "windows": {key: window_json(self.faults.window(key)) for key in WINDOW_KEYS},
                "webhooks": {
                    "events": sum(events.values()),
                    "events_by_status": events,
                    "delivered": events.get("delivered", 0),
                    "attempts": len(attempts),
                    "attempts_by_code": counters.get("webhook_attempts", {}),
                    "attempt_log": attempts,
                },
            },
        )

    def reset(self, request: Request) -> Response:
        self.store.reset()
        return json_response(200, {"reset": True})

    def get_info(self, request: Request) -> Response:
        return json_response(200, self.info)


def window_json(window: tuple[float, float] | None) -> dict[str, str] | None:
    """A fault window in real UTC time, so a run can line its own observations up with it."""
    if window is None:
        return None
    opens, closes = (
        datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds") for moment in window
    )
    return {"opens": opens, "closes": closes}


def catalogue_json(catalogue: dict[str, Product] | None) -> list[dict[str, Any]] | None:
    if catalogue is None:
        return None
    return [{"id": p.id, "capacity": p.capacity, "price": str(p.price)} for p in catalogue.values()]


def reservation_truth(protocol: ReservationWire, ledger: Ledger) -> Route:
    """`GET /_sandbox/reservations`: every reservation with its history, vanished ones included."""

    def reservations(request: Request) -> Response:
        client_reference = request.args.get("client_reference") or request.args.get("ref")
        history = ledger.history()
        return json_response(
            200,
            {
                "profile": protocol.name,
                "reservations": [
                    protocol.ground_truth(r, history.get(r.id, [])) for r in ledger.all(client_reference)
                ],
            },
        )

    return Route("/_sandbox/reservations", ("GET",), "sandbox_reservations", reservations)
