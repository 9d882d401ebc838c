"""The cluster run's plan, fault schedule and per-fault figures, as plain data (no namespaces)."""

from __future__ import annotations

import ipaddress
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from chaos.cluster.evidence import fault_figures
from chaos.cluster.partitions import FaultRecord, Sample
from chaos.cluster.plan import (
    IFNAMSIZ,
    build_plan,
    pick_subnet,
    plan_faults,
    run_id_of,
)
from chaos.cluster.stack import RequestRecord
from chaos.config import ClusterOptions
from chaos.model import BookingRow, EventRow, Snapshot


def a_plan(**options):
    return build_plan(run_id="a1b2c3", subnet="10.231.7.0/24", options=ClusterOptions(**options))


def test_every_role_gets_a_host_of_its_own_with_a_unique_address():
    plan = a_plan(web_hosts=2, worker_hosts=3)

    roles = [(h.name, h.role) for h in plan.hosts]
    assert roles == [
        ("db", "db"),
        ("broker", "broker"),
        ("partners", "partners"),
        ("scheduler", "scheduler"),
        ("scheduler-2", "scheduler"),
        ("web-1", "web"),
        ("web-2", "web"),
        ("worker-1", "worker"),
        ("worker-2", "worker"),
        ("worker-3", "worker"),
    ]
    addresses = [ipaddress.ip_address(h.address) for h in plan.hosts]
    assert len(set(addresses)) == len(addresses)
    assert all(a in plan.subnet for a in addresses)
    assert plan.gateway == "10.231.7.1"
    assert plan.gateway not in {h.address for h in plan.hosts}


def test_every_kernel_name_fits_and_carries_the_run_id():
    plan = a_plan(web_hosts=9, worker_hosts=9)

    names = [plan.bridge, *(plan.link(h) for h in plan.hosts), *(plan.peer(h) for h in plan.hosts)]
    assert max(len(n) for n in names) <= IFNAMSIZ
    assert len(set(names)) == len(names)
    assert {run_id_of(n) for n in [*names, *(plan.netns(h) for h in plan.hosts)]} == {"a1b2c3"}


def test_names_of_others_are_not_taken_for_ours():
    assert run_id_of("eth0") is None
    assert run_id_of("cclzzzzzz-web-1") is None  # not a run id
    assert run_id_of("ccl0f0f0fk1") == "0f0f0f"


def test_no_standby_scheduler_when_asked():
    assert [h.name for h in a_plan(standby_scheduler=False).by_role("scheduler")] == ["scheduler"]


@pytest.mark.parametrize("hosts", [{"web_hosts": 0}, {"worker_hosts": 10}])
def test_host_counts_out_of_range_are_refused(hosts):
    with pytest.raises(ValueError, match="between 1 and 9"):
        a_plan(**hosts)


def test_a_subnet_too_small_is_refused():
    with pytest.raises(ValueError, match="at least 64 addresses"):
        build_plan(run_id="a1b2c3", subnet="10.231.7.0/27", options=ClusterOptions())


def test_the_first_free_subnet_is_picked():
    in_use = ["192.0.2.0/24", "10.231.0.0/24", "10.231.1.5/32", "127.0.0.0/8"]
    assert pick_subnet(in_use) == "10.231.2.0/24"


def test_a_wider_network_in_use_blocks_every_subnet_inside_it():
    assert pick_subnet(["10.231.0.0/23"]) == "10.231.2.0/24"
    with pytest.raises(RuntimeError, match="in use"):
        pick_subnet(["10.0.0.0/8"])


def test_faults_run_one_after_the_other_in_their_order():
    plan = a_plan()
    options = ClusterOptions(
        worker_cut_s=75, web_cut_s=15, broker_cut_s=8, scheduler_cut_s=70, partition_s=20
    )

    faults = plan_faults(plan=plan, options=options, load_s=250)

    assert [(f.kind, f.hosts) for f in faults] == [
        ("web_cut", ("web-1",)),
        ("partners_partition", ("worker-2", "partners")),
        ("broker_cut", ("broker",)),
        ("worker_cut", ("worker-1",)),
        ("scheduler_cut", ("scheduler",)),
    ]
    assert [f.start_s for f in faults] == [10.0, 30.0, 55.0, 95.0, 175.0]
    assert all(later.start_s >= earlier.end_s for earlier, later in itertools.pairwise(faults))


def test_a_short_load_pushes_each_fault_after_the_previous_one():
    options = ClusterOptions(worker_cut_s=12, web_cut_s=5, broker_cut_s=4, scheduler_cut_s=4, partition_s=6)

    faults = plan_faults(plan=a_plan(), options=options, load_s=20)

    assert [f.start_s for f in faults] == [0.8, 8.8, 17.8, 24.8, 39.8]


def test_a_fault_without_a_second_host_to_fail_over_to_is_left_out():
    plan = a_plan(web_hosts=1, worker_hosts=1)

    kinds = [f.kind for f in plan_faults(plan=plan, options=ClusterOptions(), load_s=250)]

    assert kinds == ["partners_partition", "broker_cut", "scheduler_cut"]


def test_a_zero_duration_or_no_network_faults_leaves_faults_out():
    plan = a_plan()
    assert plan_faults(plan=plan, options=ClusterOptions(network_faults=False), load_s=250) == []
    kinds = [f.kind for f in plan_faults(plan=plan, options=ClusterOptions(broker_cut_s=0), load_s=250)]
    assert "broker_cut" not in kinds


# --- what the system did, read back ----------------------------------------------------------------
T0 = 1_800_000_000.0  # the load's start, epoch seconds


def snapshot_of(bookings=()) -> Snapshot:
    return Snapshot(
        profiles={},
        skew_s={},
        bookings={b.reference: b for b in bookings},
        idempotency=[],
        reservations=[],
        observations=[],
        truth=[],
        clients=[],
    )


def the_fault(kind):
    (fault,) = [f for f in plan_faults(plan=a_plan(), options=ClusterOptions(), load_s=250) if f.kind == kind]
    return fault


def booking(reference, *, events_at):
    moments = [datetime.fromtimestamp(T0 + t, tz=UTC) for t in events_at]
    return BookingRow(
        reference=reference,
        partner_code="ref",
        customer="c1",
        status="pending_partner",
        attention_reason="",
        attention_detail="",
        deadline=moments[0] + timedelta(seconds=120),
        created_at=moments[0],
        events=tuple(
            EventRow(id=i, kind="booking.x", actor="worker", from_state="", to_state="", occurred_at=at)
            for i, at in enumerate(moments)
        ),
    )


def figures_for(record, *, samples=(), requests=(), bookings=(), references=None):
    return fault_figures(
        record,
        started_at=T0,
        samples=list(samples),
        requests=list(requests),
        attempts=[],
        snapshot=snapshot_of(bookings),
        scheduler_logs={},
        addresses={"web-1": "10.231.7.11", "web-2": "10.231.7.12", "worker-1": "10.231.7.21"},
        references=references or {},
    )


def test_a_cut_worker_s_held_bookings_moved_on_elsewhere_and_its_return_are_read():
    record = FaultRecord(
        the_fault("worker_cut"),
        began_s=95.0,
        ended_s=195.0,
        worker_ids=["w1"],
        held=[("submit_booking", "id-a"), ("sync_booking", "id-b"), ("apply_inbound_event", "17")],
    )
    samples = [
        Sample(at_s=94.5, heartbeats={"w1": 94.0, "w2": 94.4}, acks={"w1": 3, "w2": 1}, lock_ttl_ms=-2),
        Sample(at_s=96.0, heartbeats={"w1": 95.0, "w2": 96.0}, acks={"w1": 3, "w2": 1}, lock_ttl_ms=-2),
        Sample(at_s=170.0, heartbeats={"w1": 95.0, "w2": 170.0}, acks={"w2": 5}, lock_ttl_ms=-2),
        Sample(at_s=196.0, heartbeats={"w1": 95.0, "w2": 196.0}, acks={"w2": 1}, lock_ttl_ms=-2),
        Sample(at_s=197.5, heartbeats={"w1": 197.4, "w2": 197.5}, acks={}, lock_ttl_ms=-2),
    ]
    moved = booking("BK-A", events_at=[80.0, 120.0])  # another host took it further at 120 s
    waited = booking("BK-B", events_at=[90.0, 200.0])  # nothing until the cut host came back

    figures = figures_for(
        record, samples=samples, bookings=[moved, waited], references={"id-a": "BK-A", "id-b": "BK-B"}
    )

    assert (figures["held_at_cut"], figures["held_bookings"]) == (3, 2)
    assert figures["held_bookings_moved_on_elsewhere_while_cut_off"] == 1
    assert figures["broker_redelivered_after_s"] == 75.0
    assert figures["broker_redelivered_while_cut_off"] is True
    assert figures["all_workers_back_after_s"] == 2.5
    assert figures["cut_host_back_after_s"] == 2.5


def test_a_cut_worker_host_is_back_when_its_own_workers_beat_whoever_else_is_silent():
    # Given a web process that enqueued before the cut (its id beats too) and is silent after it
    record = FaultRecord(the_fault("worker_cut"), began_s=95.0, ended_s=195.0, worker_ids=["w1"])
    samples = [
        Sample(at_s=94.5, heartbeats={"w1": 94.0, "w2": 94.4, "web": 94.3}, acks={}, lock_ttl_ms=-2),
        Sample(at_s=196.0, heartbeats={"w1": 95.0, "w2": 196.0, "web": 150.0}, acks={}, lock_ttl_ms=-2),
        Sample(at_s=198.0, heartbeats={"w1": 197.9, "w2": 198.0, "web": 150.0}, acks={}, lock_ttl_ms=-2),
    ]

    # When the figures are read
    figures = figures_for(record, samples=samples)

    # Then the cut host is back when its own worker beats, though not every broker client is
    assert figures["cut_host_back_after_s"] == 3.0
    assert figures["all_workers_back_after_s"] is None


def test_a_cut_web_host_s_lost_requests_are_matched_to_their_retries_elsewhere():
    fault = the_fault("web_cut")
    record = FaultRecord(fault, began_s=10.0, ended_s=25.0)

    def request(at, host, outcome, key, seconds=0.05):
        return RequestRecord(
            started=T0 + at,
            seconds=seconds,
            host=f"{host}:8000",
            method="POST",
            path="/api/v1/bookings",
            outcome=outcome,
            idempotency_key=key,
        )

    requests = [
        request(9.0, "10.231.7.11", "ReadTimeout", "k1", seconds=10.0),  # in flight at the cut
        request(19.0, "10.231.7.12", "202", "k1"),
        request(12.0, "10.231.7.11", "ConnectTimeout", "k2", seconds=3.0),
        request(15.5, "10.231.7.12", "202", "k2"),
        request(13.0, "10.231.7.12", "202", "k3"),
        request(26.0, "10.231.7.11", "202", "k4"),
    ]

    figures = figures_for(record, requests=requests)

    assert figures["requests_lost_with_the_host"] == 2
    assert figures["in_flight_at_cut"] == 1
    assert figures["keys_retried_elsewhere_and_accepted"] == 2
    assert figures["host_back_after_s"] == 1.0
    assert figures["clients"]["outcomes"] == {"ConnectTimeout": 1, "2xx": 3}


def test_a_fault_that_never_began_says_so():
    record = FaultRecord(the_fault("broker_cut"))

    assert figures_for(record)["ran"] is False
