"""The chaos run's orphan check: no reservation that no booking wants is left live at the partner
without an open case or a verified cancel, and every orphan we saw live got a case."""

from __future__ import annotations

from datetime import UTC, datetime

from chaos.checks.orphans import check_orphan_cases
from chaos.model import ObservationRow, OurReservation, PartnerChange, Snapshot, TruthReservation

AT = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def at_partner(status: str) -> TruthReservation:
    return TruthReservation(
        partner_code="ref",
        partner_ref="R-9",
        client_reference="BK-STRAY9",
        status=status,
        history=(PartnerChange(version=1, status=status, at=AT, cause="create"),),
    )


def orphan(*, case_state: str = "", case_automation: str = "", verified: bool = False) -> OurReservation:
    return OurReservation(
        partner_code="ref",
        partner_ref="R-9",
        booking_reference=None,
        role="orphan",
        status="cancelled" if verified else "confirmed",
        version=1,
        compensation_requested_at=AT if verified else None,
        compensation_reason="orphan" if verified else "",
        compensated_at=AT if verified else None,
        case_state=case_state,
        case_automation=case_automation,
    )


def snapshot(ours: OurReservation, truth: TruthReservation, *, seen_live: bool = True) -> Snapshot:
    seen = ObservationRow(
        id=1,
        partner_code="ref",
        partner_ref="R-9",
        source="webhook",
        status="confirmed" if seen_live else "cancelled",
        version=1,
        partner_modified_at=AT,
        received_at=AT,
        result="applied",
    )
    return Snapshot(
        profiles={"ref": "reference"},
        skew_s={"ref": 0.0},
        bookings={},
        idempotency=[],
        reservations=[ours],
        observations=[seen],
        truth=[truth],
        clients=[],
    )


def kinds(result) -> list[str]:
    return [v.kind for v in result.violations]


def test_a_live_orphan_with_an_open_case_passes_and_is_counted():
    result = check_orphan_cases(
        snapshot(orphan(case_state="open", case_automation="cancel_failed"), at_partner("confirmed"))
    )

    assert result.passed
    assert result.figures == {
        "cases_flagged": 1,
        "cases_open": 1,
        "orphans_held": 1,
        "orphans_live_at_partner": 1,
        "orphans_seen_live": 1,
    }


def test_a_live_orphan_nobody_is_on_is_a_violation_with_evidence():
    result = check_orphan_cases(snapshot(orphan(), at_partner("confirmed")))

    assert kinds(result) == ["orphan_seen_live_without_case", "orphan_live_without_case"]
    evidence = result.violations[1].evidence
    assert evidence["ours"] == "ref:R-9 confirmed, case none (-), compensation - not verified"
    assert evidence["partner_truth"][0].startswith("ref:R-9 ref=BK-STRAY9 now=confirmed")


def test_a_case_closed_while_the_partner_still_holds_it_is_a_violation():
    result = check_orphan_cases(snapshot(orphan(case_state="closed"), at_partner("pending")))

    assert kinds(result) == ["orphan_live_without_case"]


def test_a_verified_cancel_settles_the_case():
    result = check_orphan_cases(
        snapshot(
            orphan(case_state="closed", case_automation="cancel_verified", verified=True),
            at_partner("cancelled"),
        )
    )

    assert result.passed and result.figures["cases_closed"] == 1


def test_an_orphan_seen_live_but_never_cased_is_a_violation_even_once_gone():
    result = check_orphan_cases(snapshot(orphan(verified=True), at_partner("cancelled")))

    assert kinds(result) == ["orphan_seen_live_without_case"]


def test_an_orphan_only_ever_seen_settled_needs_no_case():
    result = check_orphan_cases(snapshot(orphan(verified=True), at_partner("cancelled"), seen_live=False))

    assert result.passed and result.figures["cases_none"] == 1


def test_a_reservation_linked_to_a_booking_is_not_judged_here():
    linked = OurReservation(**{**orphan().__dict__, "booking_reference": "BK-AAAAAA", "role": "primary"})

    result = check_orphan_cases(snapshot(linked, at_partner("confirmed")))

    assert result.passed and result.figures["orphans_held"] == 0
