"""The `payments` profile: the subset of Stripe's v1 HTTP API the official SDK uses for
PaymentIntents in manual capture, refunds and the charges behind them.

Auth is the secret key (`Authorization: Bearer <key>`, or HTTP Basic with the key as user).
POST bodies are form-encoded (`stripe_wire.decode`); every answer is JSON with a `Request-Id`.
Parameters are checked first (a `400` then saves nothing under an idempotency key); the change
and its saved answer are then one transaction (`payment_keys`). The shared fault injection of
`app.py` wraps every call; a 5xx after commit is saved under the request's key, as Stripe saves
its 500s, and a 500 may be reconciled, its change made a few seconds after the answer
(`error_500_reconciled_rate`). Ground truth: `GET /_sandbox/ground_truth` (also `/_sandbox/payments`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.faults import Faults
from sandbox.payment_keys import IdempotencyKeys
from sandbox.payment_ledger import NewIntent, Outcome, PaymentLedger, RequestMeta
from sandbox.store import Store
from sandbox.stripe_wire import (
    ApiError,
    StripeResponse,
    boolean,
    choice,
    created_filter,
    currency,
    decode,
    dumps,
    error_response,
    expand,
    fingerprint,
    hash_param,
    integer,
    list_object,
    metadata,
    missing,
    new_id,
    only,
    page,
    response,
    text,
    text_list,
)
from sandbox.wire import CallContext, Route, json_response

SERVER_ERRORS = (500, 502, 503, 504)
CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
MAX_AMOUNT = 99_999_999
# The least Stripe charges (its currencies page, "Minimum and maximum charge amounts", by
# settlement currency; minor units and as it writes them): a PaymentIntent below it is refused
# `amount_too_small`. In another currency the least is 0.50 USD's equivalent at the day's rate,
# which the sandbox does not model (any amount goes). A capture and a refund are not held to it.
MIN_CHARGE = {
    "usd": (50, "$0.50"),
    "aed": (200, "2.00 د.إ"),
    "aud": (50, "$0.50"),
    "bgn": (100, "лв1.00"),
    "brl": (50, "R$0.50"),
    "cad": (50, "$0.50"),
    "chf": (50, "0.50 Fr"),
    "czk": (1500, "15.00Kč"),
    "dkk": (250, "2.50-kr."),
    "eur": (50, "€0.50"),
    "gbp": (30, "£0.30"),
    "hkd": (400, "$4.00"),
    "huf": (17500, "175.00 Ft"),
    "inr": (50, "₹0.50"),
    "jpy": (50, "¥50"),
    "mxn": (1000, "$10"),
    "myr": (200, "RM 2"),
    "nok": (300, "3.00-kr."),
    "nzd": (50, "$0.50"),
    "pln": (200, "2.00 zł"),
    "ron": (200, "lei2.00"),
    "sek": (300, "3.00-kr."),
    "sgd": (50, "$0.50"),
    "thb": (1000, "฿10"),
}
GENERIC_CODES = {"not_found", "method_not_allowed", "unauthorized", "internal_error"}

# (kind, list path, filters a list takes besides created and the page)
LISTS = {
    "payment_intent": ("/v1/payment_intents", ()),
    "charge": ("/v1/charges", ("payment_intent",)),
    "refund": ("/v1/refunds", ("payment_intent", "charge")),
}

Operation = Callable[[sqlite3.Connection, RequestMeta], Outcome]
IDLE_WAIT_S = 1.0


@dataclass(frozen=True)
class _Reconciliation:
    """A write answered 500 whose change the provider makes afterwards (`error_500_reconciled_rate`)."""

    due_at: float  # real epoch
    operation: Operation
    meta: RequestMeta


class PaymentsProtocol:
    name = "payments"
    garbage: dict[str, tuple[object, ...]] = {}  # garbage_values_rate does not apply here

    def __init__(self, *, ledger: PaymentLedger, faults: Faults) -> None:
        self.ledger = ledger
        self.faults = faults
        self.keys = IdempotencyKeys(store=ledger.store, faults=faults)
        self.keys.release_stale()
        self._reconciling: list[_Reconciliation] = []
        self._reconciling_lock = threading.Lock()
        self.wake_reconciler: Callable[[], None] = lambda: None  # set by the server to its worker

    def routes(self) -> list[Route]:
        intent = "/v1/payment_intents/<intent>"
        return [
            Route(
                "/v1/payment_intents",
                ("POST",),
                "create_intent",
                self.create_intent,
                write=True,
                late_pause=True,
            ),
            Route("/v1/payment_intents", ("GET",), "list_intents", self.lister("payment_intent")),
            Route(intent, ("GET",), "retrieve_intent", self.retriever("payment_intent", "intent")),
            Route(f"{intent}/confirm", ("POST",), "confirm", self.confirm, write=True, late_pause=True),
            Route(f"{intent}/capture", ("POST",), "capture", self.capture, write=True, late_pause=True),
            Route(f"{intent}/cancel", ("POST",), "cancel", self.cancel, write=True, late_pause=True),
            Route("/v1/refunds", ("POST",), "create_refund", self.create_refund, write=True, late_pause=True),
            Route("/v1/refunds", ("GET",), "list_refunds", self.lister("refund")),
            Route("/v1/refunds/<refund>", ("GET",), "retrieve_refund", self.retriever("refund", "refund")),
            Route("/v1/charges", ("GET",), "list_charges", self.lister("charge")),
            Route("/v1/charges/<charge>", ("GET",), "retrieve_charge", self.retriever("charge", "charge")),
        ]

    def truth_routes(self) -> list[Route]:
        return [
            Route("/_sandbox/ground_truth", ("GET",), "sandbox_ground_truth", self.ground_truth),
            Route("/_sandbox/payments", ("GET",), "sandbox_payments", self.ground_truth),
        ]

    # --- the answers the shared application asks for ----------------------------------------
    def authenticate(self, request: Request, api_key: str) -> bool:
        given = request.headers.get("Authorization", "")
        if given.startswith("Basic "):
            try:
                given = "Bearer " + base64.b64decode(given[6:]).decode().split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError):
                return False
        return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())

    def error(self, status: int, code: str, message: str) -> Response:
        if status == 401:
            message = "Invalid API Key provided."
        elif status in (404, 405):
            message = "Unrecognized request URL. Please see https://stripe.com/docs."
        kind = "api_error" if status >= 500 else "invalid_request_error"
        return error_response(
            ApiError(status, message, type=kind, code=None if code in GENERIC_CODES else code)
        )

    def auth_failure(self) -> Response:
        return self.error(401, "unauthorized", "rotated key")

    def rate_limited(self, retry_after_s: int) -> Response:
        # Stripe sends no Retry-After; its SDK does not retry a 429 on its own.
        return error_response(
            ApiError(
                429,
                "Too many requests hit the API too quickly. We recommend an exponential backoff of your "
                "requests.",
                code="rate_limit",
            )
        )

    def server_error(self) -> Response:
        return self._api_error(self.faults.choice(SERVER_ERRORS))

    def server_error_after_commit(self, request: Request, committed: Response) -> Response:
        failure = self._api_error(500)
        if isinstance(committed, StripeResponse) and committed.saved_under_key is not None:
            self.keys.replace_answer(committed.saved_under_key, 500, failure.get_data(as_text=True))
        return failure

    def _failed_before_change(self, key: str, echo: dict[str, str], request_id: str) -> Response:
        """The endpoint began and failed before its change (`error_500_saved_rate`): Stripe keeps
        the 500 under the key all the same, so a retry replays it and only a read tells that
        nothing was made."""
        self.ledger.store.bump("faults", "error_500_saved")
        failure = self._api_error(500)
        body = failure.get_data(as_text=True)
        with self.ledger.store.transaction() as tx:
            self.keys.save(tx, key, 500, body)
        return response(500, body, request_id=request_id, headers=echo)

    def _failed_then_reconciled(
        self, key: str, echo: dict[str, str], request_id: str, operation: Operation
    ) -> Response:
        """`error_500_reconciled_rate`: the endpoint answers 500, kept under the key (a retry
        replays it), and its change is made `error_500_reconciled_delay_s` later (scaled), with
        its webhooks, as Stripe reconciles a request whose 500 left its outcome indeterminate:
        the object appears after the answer said nothing of it. Held in memory: a restart before
        it is due forgets it (the request then made nothing, also a 500's possible outcome)."""
        self.ledger.store.bump("faults", "error_500_reconciled")
        body = self._api_error(500).get_data(as_text=True)
        with self.ledger.store.transaction() as tx:
            self.keys.save(tx, key, 500, body)
        delay = self.faults.scaled(self.faults.uniform(*self.faults.settings.error_500_reconciled_delay_s))
        late = _Reconciliation(time.time() + delay, operation, RequestMeta(request_id, key))
        with self._reconciling_lock:
            self._reconciling.append(late)
        self.wake_reconciler()
        return response(500, body, request_id=request_id, headers=echo)

    def reconcile_due(self) -> float:
        """Worker step: make the changes of the 500s now due (their key keeps its 500); one the
        provider's rules refuse by then (the charge refunded meanwhile) makes nothing. Seconds
        until the next one."""
        now = time.time()
        with self._reconciling_lock:
            due = [r for r in self._reconciling if r.due_at <= now]
            self._reconciling = [r for r in self._reconciling if r.due_at > now]
            nxt = min((r.due_at for r in self._reconciling), default=None)
        for late in due:
            try:
                with self.ledger.store.transaction() as tx:
                    if not self.keys.keeps_500(tx, late.meta.idempotency_key or ""):
                        continue  # wiped by a reset since (or forgotten): nothing to reconcile
                    outcome = late.operation(tx, late.meta)
                    Store.bump_in(tx, "faults", "error_500_reconciled_made")
            except ApiError:
                self.ledger.store.bump("faults", "error_500_reconciled_refused")
                continue
            self.ledger.committed(outcome.inline_events)
        return IDLE_WAIT_S if nxt is None else max(0.0, min(IDLE_WAIT_S, nxt - time.time()))

    def reservation_objects(self, body: Any) -> list[dict[str, Any]]:
        return []

    @staticmethod
    def _api_error(status: int) -> Response:
        return error_response(
            ApiError(
                status,
                "An unknown error occurred. Please try again; use the same Idempotency-Key so the request "
                "is not made twice.",
                type="api_error",
            )
        )

    # --- PaymentIntents ---------------------------------------------------------------------
    def create_intent(self, request: Request, ctx: CallContext) -> Response:
        def parse(params: dict[str, Any]) -> Operation:
            only(
                params,
                (
                    "amount",
                    "currency",
                    "capture_method",
                    "confirm",
                    "payment_method",
                    "payment_method_types",
                    "automatic_payment_methods",
                    "metadata",
                    "description",
                    "return_url",
                    "expand",
                ),
            )
            amount, money = self._amount(params, "amount", required=True), currency(params)
            assert amount is not None
            new = NewIntent(
                amount=self._at_least_the_minimum(amount, money),
                currency=money,
                capture_method=choice(params, "capture_method", CAPTURE_METHODS) or "automatic_async",
                confirm=bool(boolean(params, "confirm")),
                payment_method=text(params, "payment_method"),
                payment_method_types=self._payment_method_types(params),
                automatic_payment_methods=self._automatic_payment_methods(params),
                metadata=metadata(params) or {},
                description=text(params, "description"),
                return_url=text(params, "return_url"),
            )
            return lambda tx, meta: self.ledger.create_intent(tx, new, meta)

        return self._write(request, ctx, parse, expandable=("latest_charge",))

    def confirm(self, request: Request, ctx: CallContext, intent: str) -> Response:
        def parse(params: dict[str, Any]) -> Operation:
            only(params, ("payment_method", "return_url", "expand"))
            card, return_url = text(params, "payment_method"), text(params, "return_url")
            return lambda tx, meta: self.ledger.confirm(tx, intent, card, return_url, meta)

        return self._write(request, ctx, parse, expandable=("latest_charge",))

    def capture(self, request: Request, ctx: CallContext, intent: str) -> Response:
        def parse(params: dict[str, Any]) -> Operation:
            only(params, ("amount_to_capture", "metadata", "expand"))
            amount = self._amount(params, "amount_to_capture")
            changes = metadata(params)
            return lambda tx, meta: self.ledger.capture(tx, intent, amount, changes, meta)

        return self._write(request, ctx, parse, expandable=("latest_charge",))

    def cancel(self, request: Request, ctx: CallContext, intent: str) -> Response:
        def parse(params: dict[str, Any]) -> Operation:
            only(params, ("cancellation_reason", "expand"))
            reason = choice(params, "cancellation_reason", CANCELLATION_REASONS)
            return lambda tx, meta: self.ledger.cancel(tx, intent, reason, meta)

        return self._write(request, ctx, parse, expandable=("latest_charge",))

    # --- refunds ----------------------------------------------------------------------------
    def create_refund(self, request: Request, ctx: CallContext) -> Response:
        def parse(params: dict[str, Any]) -> Operation:
            only(params, ("payment_intent", "charge", "amount", "reason", "metadata", "expand"))
            intent, charge = text(params, "payment_intent"), text(params, "charge")
            if intent is None and charge is None:
                raise missing("payment_intent")
            if intent is not None and charge is not None:
                raise ApiError(400, "You may only specify one of these parameters: charge, payment_intent.")
            amount = self._amount(params, "amount")
            reason = choice(params, "reason", REFUND_REASONS)
            notes = metadata(params) or {}
            return lambda tx, meta: self.ledger.create_refund(
                tx,
                intent_id=intent,
                charge_id=charge,
                amount=amount,
                reason=reason,
                metadata=notes,
                meta=meta,
            )

        return self._write(request, ctx, parse, expandable=())

    # --- reads ------------------------------------------------------------------------------
    def retriever(self, kind: str, param: str) -> Callable[..., Response]:
        expandable = ("latest_charge",) if kind == "payment_intent" else ()

        def retrieve(request: Request, ctx: CallContext, **ids: str) -> Response:
            object_id = next(iter(ids.values()))
            try:
                params = decode(request.args.items(multi=True))
                only(params, ("expand",))
                paths = expand(params, expandable)
                found = self.ledger.get(kind, object_id)
                if found is None:
                    raise ApiError(
                        404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
                    )
            except ApiError as exc:
                return error_response(exc)
            return response(200, self._expanded(found, paths))

        return retrieve

    def lister(self, kind: str) -> Callable[..., Response]:
        url, filters = LISTS[kind]
        expandable = ("data.latest_charge",) if kind == "payment_intent" else ()

        def list_objects(request: Request, ctx: CallContext) -> Response:
            try:
                params = decode(request.args.items(multi=True))
                only(params, ("created", "limit", "starting_after", "ending_before", "expand", *filters))
                limit, starting_after, ending_before = page(params)
                paths = [path.removeprefix("data.") for path in expand(params, expandable)]
                belongs_to = {name: value for name in filters if (value := text(params, name))}
                objects, has_more = self.ledger.page(
                    kind,
                    created=created_filter(params),
                    belongs_to=belongs_to,
                    limit=limit,
                    starting_after=starting_after,
                    ending_before=ending_before,
                )
            except ApiError as exc:
                return error_response(exc)
            return response(200, list_object(url, [self._expanded(o, paths) for o in objects], has_more))

        return list_objects

    def ground_truth(self, request: Request) -> Response:
        truth = self.ledger.ground_truth(request.args.get("payment_intent"))
        return json_response(200, {"profile": self.name, **truth, "idempotency_keys": self.keys.all()})

    # --- the write path ---------------------------------------------------------------------
    def _write(
        self,
        request: Request,
        ctx: CallContext,
        parse: Callable[[dict[str, Any]], Operation],
        *,
        expandable: tuple[str, ...],
    ) -> Response:
        """Check the parameters, claim the key, make the change and save its answer in one go."""
        request_id = new_id("req")
        try:
            params = self._form(request)
            paths = expand(params, expandable)
            operation = parse(params)
        except ApiError as exc:
            ctx.pause()
            return error_response(exc, request_id=request_id)
        key = request.headers.get("Idempotency-Key") or None
        if key and not self.faults.settings.honour_idempotency_keys:
            self.ledger.store.bump("faults", "idempotency_key_ignored")
            key = None
        echo = {"Idempotency-Key": key} if key else {}
        if key:
            claim = self.keys.claim(key, fingerprint(request.method, request.path, params))
            ctx.pause()  # inside the claim: a repeat arriving now finds the key in flight
            if claim.kind == "mismatch":
                return error_response(
                    ApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request.",
                        type="idempotency_error",
                    ),
                    request_id=request_id,
                )
            if claim.kind == "in_flight":
                return error_response(
                    ApiError(
                        409,
                        "There is currently another in-progress request using this Idempotent Key (that "
                        "probably means you submitted twice, and the other request is still going through): "
                        f"{key}. Please try again later.",
                        code="idempotency_key_in_use",
                    ),
                    request_id=request_id,
                )
            if claim.kind == "replay":
                assert claim.status is not None and claim.body is not None
                return response(
                    claim.status,
                    claim.body,
                    request_id=request_id,
                    headers={**echo, "Idempotent-Replayed": "true"},
                )
            if self.faults.chance("error_500_saved_rate"):
                return self._failed_before_change(key, echo, request_id)
            if self.faults.chance("error_500_reconciled_rate"):
                return self._failed_then_reconciled(key, echo, request_id, operation)
        else:
            ctx.pause()
        meta = RequestMeta(request_id, key)
        try:
            with self.ledger.store.transaction() as tx:
                tx.execute("SAVEPOINT operation")
                try:
                    outcome = operation(tx, meta)
                except ApiError as exc:
                    tx.execute("ROLLBACK TO operation")
                    outcome = Outcome(exc.status, exc.body())
                if outcome.status == 200:
                    outcome.body = self._expanded(outcome.body, paths, tx)
                body = dumps(outcome.body)
                if key:
                    self.keys.save(tx, key, outcome.status, body)
        except BaseException:
            if key:
                self.keys.release(key)
            raise
        self.ledger.committed(outcome.inline_events)
        answer = response(outcome.status, body, request_id=request_id, headers=echo)
        answer.saved_under_key = key
        return answer

    def _expanded(
        self, obj: dict[str, Any], paths: list[str], tx: sqlite3.Connection | None = None
    ) -> dict[str, Any]:
        """`latest_charge` replaced by the charge itself, when asked for."""
        if "latest_charge" not in paths or not obj.get("latest_charge"):
            return obj
        charge = (
            self.ledger.load_in(tx, "charge", obj["latest_charge"])
            if tx is not None
            else self.ledger.get("charge", obj["latest_charge"])
        )
        return {**obj, "latest_charge": charge}

    @staticmethod
    def _form(request: Request) -> dict[str, Any]:
        if request.get_data(cache=True) and request.mimetype != "application/x-www-form-urlencoded":
            raise ApiError(
                400,
                "Invalid request: the body must be form-encoded (Content-Type: "
                "application/x-www-form-urlencoded).",
            )
        return decode(request.form.items(multi=True))

    # --- parameter shapes of this API -------------------------------------------------------
    @staticmethod
    def _amount(params: dict[str, Any], name: str, *, required: bool = False) -> int | None:
        amount = integer(params, name, required=required, minimum=1)
        if amount is not None and amount > MAX_AMOUNT:
            raise ApiError(
                400, f"Amount must be no more than {MAX_AMOUNT}", code="amount_too_large", param=name
            )
        return amount

    @staticmethod
    def _at_least_the_minimum(amount: int, currency: str) -> int:
        least, shown = MIN_CHARGE.get(currency, (1, ""))
        if amount < least:
            raise ApiError(
                400, f"Amount must be at least {shown} {currency}", code="amount_too_small", param="amount"
            )
        return amount

    @staticmethod
    def _payment_method_types(params: dict[str, Any]) -> list[str]:
        types = text_list(params, "payment_method_types") or ["card"]
        for kind in types:
            if kind != "card":
                raise ApiError(
                    400, f'The payment method type "{kind}" is invalid.', param="payment_method_types"
                )
        return types

    @staticmethod
    def _automatic_payment_methods(params: dict[str, Any]) -> dict[str, Any] | None:
        """Stripe's default when no payment_method_types are given: Dashboard methods, redirects allowed."""
        given = hash_param(params, "automatic_payment_methods")
        if given is not None and "payment_method_types" in params:
            raise ApiError(
                400,
                "You may only specify one of these parameters: automatic_payment_methods, "
                "payment_method_types.",
            )
        if given is None:
            return (
                None if "payment_method_types" in params else {"allow_redirects": "always", "enabled": True}
            )
        only(given, ("enabled", "allow_redirects"))
        enabled = boolean(given, "enabled")
        if enabled is None:
            raise missing("automatic_payment_methods[enabled]")
        return {
            "allow_redirects": choice(given, "allow_redirects", ("always", "never")) or "always",
            "enabled": enabled,
        }
