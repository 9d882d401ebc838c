"""Sandbox partners: real partner servers that misbehave on purpose.

One process serves one partner speaking either protocol of `docs/partner-protocols.md` (`reference`
or `legacy`), or the payment provider (`payments`, the subset of Stripe's API its SDK uses), keeps
its own ground truth in its own SQLite file and injects the faults listed there. It is a partner
system, not part of ours: nothing here imports the project's apps, its settings or the Django ORM,
so it can run (`python -m sandbox.server`) without them.

Modules:
    clock       the partner's (possibly skewed) clock and its time formats
    faults      fault settings, their validation, and the seeded dice
    store       the SQLite store (reservations, history, keys, webhooks, counters)
    ledger      the partner's business rules: create, settle, cancel, capacity
    initiatives what the partner does on its own: cancel, lose (vanish) or amend a reservation
    garbage     out-of-range values for the garbage_values fault
    webhooks    the persistent webhook outbox and its sender thread
    reference   the `reference` wire protocol
    legacy      the `legacy` wire protocol
    payments    the `payments` profile: Stripe's PaymentIntents, refunds and charges endpoints
    payment_ledger  the provider's rules: authorize, capture, cancel, refund, lapse; events
    payment_keys    Stripe's idempotency keys: saved answers, replays, mismatches
    stripe_wire     Stripe's wire format: form-encoded params, errors, lists, Stripe-Signature
    wire        what the protocols share: JSON responses, body checks, routes, call context
    control     the `/_sandbox/*` endpoints (faults, ground truth, stats, reset)
    app         the WSGI application: routing, auth, fault injection around every call
    listener    the HTTP port (cheroot), closed and reopened by an outage window
    server      configuration, assembly and the run loop
    cli         command-line options shared by `manage.py run_sandbox_partner` and `__main__`
"""
