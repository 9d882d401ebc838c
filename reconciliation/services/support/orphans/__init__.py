"""Support actions on an orphan case (a partner reservation no booking wants), in the frame of
the booking actions: permission, a preview with our record beside the partner's live answer,
the same checks re-run under the locks, once per token, and a `support.*` row in the case's
history (and on the booking's timeline when it is linked to one, or is a stray duplicate of it).

- cancel at the partner: the compensation actor cancels and verifies it (a cancel decided
  before is driven again, with a fresh budget of tries); the case closes itself once verified;
- link to a booking of the same partner: the reservation becomes the booking's and the one door
  reconciles the booking (a second live reservation becomes a duplicate that is cancelled, a
  failed booking has it cancelled, an open one may be confirmed by it);
- close with a note: refused while a cancel is under way, and while the partner holds it live
  unless the operator may also close live orphans.

The case as an action finds it, the refusals and the look-ups are in `situation`; what an action
will do, shown before it runs, in `previews`; the actions themselves, in one frame, and the one
entry that runs them by name, in `actions`.
"""
