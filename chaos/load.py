"""Load: customers made directly in the database, bookings made through the real HTTP API.

Clients behave like real ones: a timeout, a dropped connection, a 5xx or a 429 makes them try
again with the SAME Idempotency-Key and body; some resend a request that was already accepted,
some send it twice at once (a double click), some cancel a booking a little later, and some cancel
one once they see it confirmed (a paid one is then refunded by its policy). Every answer
is written down in the `ClientLedger`, the record the "no booking lost" check reads.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from bookings.models import Offer
from chaos.config import ChaosConfig, ClientBehaviour, RunIdentity
from chaos.payments import payment_method
from chaos.watchers import ShownLog

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Customer:
    username: str
    token: str


@dataclass(frozen=True)
class OfferChoice:
    offer_id: int
    partner_code: str
    profile: str
    product_id: str
    max_guests: int


@dataclass(frozen=True)
class PlannedBooking:
    index: int
    key: str
    customer: Customer
    offer: OfferChoice
    body: dict[str, Any]
    replay: bool
    race: bool
    cancel_after_s: float | None
    cancel_once_confirmed: bool = False


@dataclass
class KeyRecord:
    key: str
    customer: str
    partner_code: str
    product_id: str
    responses: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # from every 202, in order
    refusal: str = ""
    cancel: str = ""
    gave_up: bool = False

    @property
    def accepted(self) -> bool:
        return bool(self.references)

    @property
    def outcome(self) -> str:
        if self.accepted:
            return "accepted"
        if self.refusal:
            return "refused"
        return "gave_up" if self.gave_up else "pending"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "customer": self.customer,
            "partner": self.partner_code,
            "product": self.product_id,
            "outcome": self.outcome,
            "references": sorted(set(self.references)),
            "responses": self.responses,
            "refusal": self.refusal,
            "cancel": self.cancel,
        }


class ClientLedger:
    """Thread-safe record of every request the clients made and every answer they got."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[str, KeyRecord] = {}
        self.requests = 0
        self.transient_answers = 0

    def open(self, planned: PlannedBooking) -> KeyRecord:
        with self._lock:
            return self.records.setdefault(
                planned.key,
                KeyRecord(
                    key=planned.key,
                    customer=planned.customer.username,
                    partner_code=planned.offer.partner_code,
                    product_id=planned.offer.product_id,
                ),
            )

    def note(self, record: KeyRecord, answer: str, *, reference: str | None = None, transient: bool) -> None:
        with self._lock:
            self.requests += 1
            self.transient_answers += int(transient)
            record.responses.append(answer)
            if reference:
                record.references.append(reference)

    def update(self, record: KeyRecord, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(record, name, value)

    def counts(self) -> dict[str, int]:
        with self._lock:
            outcomes = [r.outcome for r in self.records.values()]
            return {
                "sent": len(outcomes),
                "accepted": outcomes.count("accepted"),
                "refused": outcomes.count("refused"),
                "gave_up": outcomes.count("gave_up"),
                "requests": self.requests,
                "transient_answers": self.transient_answers,
            }


# --- set-up ------------------------------------------------------------------------------------
def create_customers(identity: RunIdentity, count: int) -> list[Customer]:
    user_model = get_user_model()
    prefix = f"{identity.namespace}-c"
    users = [
        user_model(username=f"{prefix}{i:04d}", email=f"{prefix}{i:04d}@chaos.invalid") for i in range(count)
    ]
    for user in users:
        user.set_unusable_password()
    user_model.objects.bulk_create(users)
    saved = list(user_model.objects.filter(username__startswith=prefix).order_by("username"))
    tokens = [Token(key=Token.generate_key(), user=user) for user in saved]
    Token.objects.bulk_create(tokens)
    return [Customer(username=t.user.username, token=t.key) for t in tokens]


def run_offers(partners: dict[str, str]) -> list[OfferChoice]:
    """The offers of the run's partners (code -> profile)."""
    offers = Offer.objects.filter(partner__code__in=partners).select_related("partner").order_by("id")
    return [
        OfferChoice(
            offer_id=o.pk,
            partner_code=o.partner.code,
            profile=partners[o.partner.code],
            product_id=o.product_id,
            max_guests=o.capacity,
        )
        for o in offers
    ]


def plan_bookings(
    *,
    config: ChaosConfig,
    identity: RunIdentity,
    customers: list[Customer],
    offers: list[OfferChoice],
    pays: bool = False,
) -> list[PlannedBooking]:
    """Every request the run will make, decided up front from the seed; with `pays`, a share of
    them pays with a test card (`chaos.payments.payment_method`)."""
    rng = random.Random(config.seed)
    behaviour = config.client
    today = datetime.now(UTC).date()
    by_profile: dict[str, list[OfferChoice]] = {}
    for offer in offers:
        by_profile.setdefault(offer.profile, []).append(offer)
    profiles = sorted(by_profile)
    planned = []
    for index in range(config.bookings):
        choices = by_profile[profiles[index % len(profiles)]]
        scarce = [o for o in choices if o.product_id == "suite"]
        plenty = [o for o in choices if o.product_id != "suite"] or choices
        offer = rng.choice(scarce) if scarce and rng.random() < 0.15 else rng.choice(plenty)
        if offer.product_id == "suite":  # a few dates only: they compete for three suites
            start = today + timedelta(days=rng.randint(40, 44))
            nights = rng.randint(1, 2)
        else:
            start = today + timedelta(days=rng.randint(30, 700))
            nights = rng.randint(1, 5)
        method = payment_method(config.seed, index) if pays else None
        cancel_after_s = rng.uniform(0.0, 5.0) if rng.random() < behaviour.cancel_rate else None
        planned.append(
            PlannedBooking(
                index=index,
                key=f"{identity.namespace}-{index:05d}",
                customer=customers[index % len(customers)],
                offer=offer,
                body={
                    "offer": offer.offer_id,
                    "start_date": start.isoformat(),
                    "end_date": (start + timedelta(days=nights)).isoformat(),
                    "guests": rng.randint(1, offer.max_guests),
                    **({"payment_method": method} if method else {}),
                },
                replay=rng.random() < behaviour.replay_rate,
                race=rng.random() < behaviour.race_rate,
                cancel_after_s=cancel_after_s,
                cancel_once_confirmed=(
                    cancel_after_s is None and rng.random() < behaviour.cancel_confirmed_rate
                ),
            )
        )
    return planned


# --- the clients -------------------------------------------------------------------------------
class BookingClient:
    def __init__(
        self,
        *,
        base_url: str,
        behaviour: ClientBehaviour,
        ledger: ClientLedger,
        session_factory: Callable[[], requests.Session] = requests.Session,
        shown: ShownLog | None = None,
    ) -> None:
        self.base_url = base_url
        self.behaviour = behaviour
        self.ledger = ledger
        self.session_factory = session_factory  # one session per client thread
        self.shown = shown  # what each answer showed the customer, for the honest-status checks
        self._answers = itertools.count(1)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.session_factory()
        return session

    def book(self, planned: PlannedBooking) -> KeyRecord:
        record = self.ledger.open(planned)
        twin = None
        if planned.race:  # the same request, at the same moment, from another connection
            twin = threading.Thread(target=self._post_booking, args=(planned, record), daemon=True)
            twin.start()
        self._post_booking(planned, record)
        if twin is not None:
            twin.join()
        if record.accepted and planned.replay:
            self._post_booking(planned, record)
        return record

    def cancel(self, planned: PlannedBooking, record: KeyRecord) -> None:
        reference = record.references[0]
        url = f"{self.base_url}/api/v1/bookings/{reference}/cancel"
        answer = self._with_retries(
            lambda: self._session().post(url, headers=self._headers(planned), timeout=self._timeout()),
            record=record,
        )
        self.ledger.update(record, cancel=answer)

    def status(self, planned: PlannedBooking, record: KeyRecord) -> str:
        """What the booking's page tells its customer now ("" when no answer came)."""
        url = f"{self.base_url}/api/v1/bookings/{record.references[0]}"
        try:
            response = self._session().get(url, headers=self._headers(planned), timeout=self._timeout())
        except requests.RequestException:
            return ""
        body = _json(response) if response.status_code == 200 else None
        return str(body.get("status", "")) if isinstance(body, dict) else ""

    def _post_booking(self, planned: PlannedBooking, record: KeyRecord) -> None:
        headers = {**self._headers(planned), "Idempotency-Key": planned.key}
        url = f"{self.base_url}/api/v1/bookings"
        answer = self._with_retries(
            lambda: self._session().post(url, json=planned.body, headers=headers, timeout=self._timeout()),
            record=record,
        )
        if answer == "gave_up" and not record.accepted:
            self.ledger.update(record, gave_up=True)
        elif not answer.startswith("202") and not record.accepted:
            self.ledger.update(record, refusal=answer)

    def _with_retries(self, send: Callable[[], requests.Response], *, record: KeyRecord) -> str:
        """Send until an answer that is not transient; return it as "STATUS detail"."""
        for attempt in range(self.behaviour.retries + 1):
            wait_s = min(3.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)
            try:
                response = send()
                if self.shown is not None and response.status_code == 202:
                    # Each answer is a client of its own: two requests in flight (a double
                    # click) may be answered in either order.
                    self.shown.add(f"answer:{record.key}#{next(self._answers)}", _json(response))
            except requests.RequestException as exc:
                self.ledger.note(record, type(exc).__name__, transient=True)
                time.sleep(wait_s)
                continue
            if response.status_code in TRANSIENT_STATUSES:
                self.ledger.note(record, str(response.status_code), transient=True)
                time.sleep(max(wait_s, _retry_after(response)))
                continue
            reference = _reference(response) if response.status_code == 202 else None
            answer = f"{response.status_code} {reference or _error_code(response)}".strip()
            self.ledger.note(record, answer, reference=reference, transient=False)
            return answer
        return "gave_up"

    def _headers(self, planned: PlannedBooking) -> dict[str, str]:
        return {"Authorization": f"Token {planned.customer.token}"}

    def _timeout(self) -> tuple[float, float]:
        return (self.behaviour.connect_timeout_s, self.behaviour.read_timeout_s)


def _retry_after(response: requests.Response) -> float:
    try:
        return min(5.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _reference(response: requests.Response) -> str | None:
    try:
        return str(response.json()["reference"])
    except (ValueError, KeyError, TypeError):
        return None


def _error_code(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return response.text[:80]


class LoadGenerator:
    """Sends the planned bookings with bounded concurrency, optionally paced over a duration."""

    def __init__(
        self,
        *,
        client: BookingClient,
        concurrency: int,
        duration_s: float,
        on_accepted: Callable[[PlannedBooking, KeyRecord], None] | None = None,
    ) -> None:
        self.client = client
        self.concurrency = concurrency
        self.duration_s = duration_s
        self.on_accepted = on_accepted  # e.g. the customer's clients start following the booking
        self.stop = threading.Event()

    def run(self, planned: list[PlannedBooking]) -> None:
        slots = threading.BoundedSemaphore(self.concurrency)
        gap_s = self.duration_s / len(planned) if self.duration_s and planned else 0.0
        started = time.monotonic()
        # The booking pool is left (and drained) first: its tasks still hand work to `cancels`.
        with (
            ThreadPoolExecutor(16, thread_name_prefix="chaos-cancel") as cancels,
            ThreadPoolExecutor(self.concurrency, thread_name_prefix="chaos-client") as pool,
        ):
            for item in planned:
                if self.stop.is_set():
                    break
                delay = started + item.index * gap_s - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
                slots.acquire()
                future = pool.submit(self._book, item, cancels)
                future.add_done_callback(lambda _f: slots.release())

    def _book(self, planned: PlannedBooking, cancels: ThreadPoolExecutor) -> None:
        record = self.client.book(planned)
        if record.accepted and self.on_accepted is not None:
            self.on_accepted(planned, record)
        if record.accepted and planned.cancel_after_s is not None:
            cancels.submit(self._cancel_later, planned, record)
        if record.accepted and planned.cancel_once_confirmed:
            cancels.submit(self._cancel_once_confirmed, planned, record)

    def _cancel_later(self, planned: PlannedBooking, record: KeyRecord) -> None:
        self.stop.wait(planned.cancel_after_s or 0.0)
        self.client.cancel(planned, record)

    def _cancel_once_confirmed(self, planned: PlannedBooking, record: KeyRecord) -> None:
        """Look at the booking every few seconds, as its customer would, and cancel it once it
        shows confirmed; give up when it ends otherwise or the wait runs out."""
        deadline = time.monotonic() + self.client.behaviour.confirmed_wait_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            status = self.client.status(planned, record)
            if status == "confirmed":
                self.client.cancel(planned, record)
                return
            if status in ("failed", "cancelled", "cancelling", "disrupted"):
                return
            self.stop.wait(self.client.behaviour.confirmed_poll_s)
