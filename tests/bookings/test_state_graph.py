"""Every set of booking states in the product is one of the named sets of bookings/states.py, and
each of those is a set the state machine's graph implies, read from django-fsm-2's own metadata.

So a set copied by hand into some module, or a named set that a change to the transitions left
behind, fails here. tests/bookings/test_transitions.py keeps the hand-written graph (the spec).
"""

from __future__ import annotations

import importlib
import pkgutil
import types
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from bookings import states
from bookings.models import status_edges
from bookings.states import BookingState

PRODUCT_PACKAGES = ("bookings", "partners", "reconciliation")
ATTENTION = BookingState.NEEDS_ATTENTION
ALL_STATES = frozenset(BookingState.values)


@dataclass(frozen=True)
class Edge:
    name: str
    source: str
    target: str


def _transitions() -> list[Edge]:
    """Every move, each target spelled out (`return_to_end` leads to the end its booking had)."""
    return [Edge(*edge) for edge in status_edges()]


def implied_sets() -> set[frozenset[str]]:
    """The sets the graph itself names, walking its transitions:

    - the sources of each transition;
    - the sources of the transitions into each state, but the attention state (whose way out
      is a person's decision), and of those the ones that come back to it (a way back, not a
      way in: `requested` is entered from `awaiting_payment` once, and returned to from a
      submission that did not take);
    - where each transition leads, and on from there without a person;
    - the terminal states: those whose every way out leads to the attention state;
    - the open states: those, but the attention state, with a way straight into a terminal one.
    """
    transitions = _transitions()
    sources: dict[str, set[str]] = {}
    into: dict[str, set[str]] = {}
    exits: dict[str, set[str]] = {state: set() for state in ALL_STATES}
    for t in transitions:
        sources.setdefault(t.name, set()).add(t.source)
        into.setdefault(t.target, set()).add(t.source)
        exits[t.source].add(t.target)

    def onward(state: str) -> frozenset[str]:
        reached, todo = {state}, [state]
        while todo:
            for target in exits[todo.pop()] - {ATTENTION} - reached:
                reached.add(target)
                todo.append(target)
        return frozenset(reached)

    terminal = frozenset(s for s, out in exits.items() if out == {ATTENTION})
    open_ = frozenset(s for s, out in exits.items() if s != ATTENTION and out & terminal)
    return {
        ALL_STATES,
        terminal,
        open_,
        *(frozenset(s) for s in sources.values()),
        *(frozenset(s - {ATTENTION}) for s in into.values()),
        *(frozenset((s - {ATTENTION}) & onward(target)) for target, s in into.items()),
        *(onward(t.target) for t in transitions if t.target != ATTENTION),
    }


def _is_state(member: object) -> bool:
    if isinstance(member, Enum) and not isinstance(member, BookingState):
        return False  # a customer or reservation status that shares a state's spelling
    return isinstance(member, str) and member in ALL_STATES


def state_sets(module: types.ModuleType) -> Iterator[tuple[str, frozenset[str]]]:
    """(where, members) of each module-level and class-level collection made only of states."""
    holders = [(module.__name__, vars(module))]
    holders += [
        (f"{module.__name__}.{name}", vars(value))
        for name, value in vars(module).items()
        if isinstance(value, type) and value.__module__ == module.__name__ and not issubclass(value, Enum)
    ]
    for where, namespace in holders:
        for name, value in namespace.items():
            if isinstance(value, set | frozenset | list | tuple) and value and all(map(_is_state, value)):
                yield f"{where}.{name}", frozenset(value)


def named_sets() -> dict[str, frozenset[str]]:
    return dict(state_sets(states))


def product_modules() -> Iterator[types.ModuleType]:
    for package_name in PRODUCT_PACKAGES:
        package = importlib.import_module(package_name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if ".migrations" not in info.name:
                yield importlib.import_module(info.name)


def strays(modules: list[types.ModuleType]) -> list[str]:
    allowed = {*named_sets().values(), ALL_STATES}
    return [where for module in modules for where, members in state_sets(module) if members not in allowed]


def test_every_named_set_is_one_the_graph_implies():
    implied = implied_sets()

    unimplied = [name for name, members in named_sets().items() if members not in implied]

    assert named_sets(), "bookings/states.py names no state sets"
    assert unimplied == []


def test_no_product_module_spells_out_a_state_set_of_its_own():
    modules = list(product_modules())

    assert {"partners.decisions", "reconciliation.services.sweeper"} <= {m.__name__ for m in modules}
    assert strays(modules) == []


def test_the_checks_catch_a_set_written_by_hand():
    # given a module holding the open states but one, at module and at class level
    module = types.ModuleType("tests.bookings.handwritten")
    by_hand = sorted(states.OPEN_STATES - {BookingState.PENDING_PARTNER})
    module.OPEN = frozenset(by_hand)
    module.Rule = type("Rule", (), {"__module__": module.__name__, "WATCHED": tuple(by_hand)})
    module.LIVE = ("pending", "confirmed")  # reservation statuses: not states

    # then both are reported, and the graph implies neither (they are not the open states)
    assert strays([module]) == ["tests.bookings.handwritten.OPEN", "tests.bookings.handwritten.Rule.WATCHED"]
    assert frozenset(by_hand) not in implied_sets()
    assert states.OPEN_STATES in implied_sets()
