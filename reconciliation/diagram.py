"""The booking state machine as a picture, read from the model's transitions.

With Graphviz (`dot` and the `graphviz` package) it is django-fsm-2's own `graph_transitions`
drawing; without, an SVG drawn here (states on a circle, one arrow per source → target) and,
always, a table of every transition.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from html import escape

from bookings.models import Booking, status_edges
from bookings.states import OPEN_STATES, TERMINAL_STATES, BookingState


@dataclass(frozen=True)
class Edge:
    name: str
    source: str
    target: str


def transitions() -> list[Edge]:
    edges = [Edge(name, source, target) for name, source, target in status_edges()]
    return sorted(edges, key=lambda e: (e.name, e.source, e.target))


def transition_table() -> list[dict]:
    """One row per transition: its name, every source state, its target."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for edge in transitions():
        grouped.setdefault((edge.name, edge.target), []).append(edge.source)
    return [
        {"name": name, "target": target, "sources": sorted(sources)}
        for (name, target), sources in sorted(grouped.items())
    ]


def graphviz_svg() -> str | None:
    """django-fsm-2's own graph, when Graphviz is installed; else None."""
    if shutil.which("dot") is None:
        return None
    try:
        from django_fsm.management.commands.graph_transitions import generate_dot, one_fsm_fields_data
    except ImportError:  # the graphviz Python package is missing
        return None
    graph = generate_dot([one_fsm_fields_data(Booking, "status")])
    return graph.pipe(format="svg").decode()


# Where each state sits on the circle (clockwise from the top): the happy path first.
_ORDER = [
    BookingState.AWAITING_PAYMENT,
    BookingState.REQUESTED,
    BookingState.SUBMITTING,
    BookingState.UNKNOWN,
    BookingState.PENDING_PARTNER,
    BookingState.CONFIRMED,
    BookingState.CANCEL_REQUESTED,
    BookingState.CANCELLED,
    BookingState.EXPIRED,
    BookingState.FAILED,
    BookingState.REJECTED,
    BookingState.NEEDS_ATTENTION,
]
_PALETTE = {
    "confirm": "#2e7d32",
    "fail": "#c62828",
    "reject": "#ad1457",
    "expire": "#6d4c41",
    "flag_for_attention": "#ef6c00",
    "request_cancel": "#1565c0",
    "mark_cancelled": "#283593",
}


def _fill(state: str) -> str:
    if state == BookingState.NEEDS_ATTENTION:
        return "#fff3e0"
    if state == BookingState.CONFIRMED:
        return "#e8f5e9"
    if state in TERMINAL_STATES:
        return "#eceff1"
    if state in OPEN_STATES:
        return "#e3f2fd"
    return "#ffffff"


def own_svg(width: int = 900, height: int = 720) -> str:
    states = [s.value for s in _ORDER] + [s for s in BookingState.values if s not in _ORDER]
    cx, cy, radius = width / 2, height / 2, min(width, height) / 2 - 90
    position = {}
    for index, state in enumerate(states):
        angle = -math.pi / 2 + 2 * math.pi * index / len(states)
        position[state] = (cx + radius * math.cos(angle), cy + radius * math.sin(angle))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="Booking state machine" '
        'font-family="sans-serif" font-size="12">',
        "<defs>",
    ]
    colours = sorted(set(_PALETTE.values()) | {"#607d8b"})
    for colour in colours:
        parts.append(
            f'<marker id="arrow{colour[1:]}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/>'
            "</marker>"
        )
    parts.append("</defs>")
    node_rx, node_ry = 62, 18
    for edge in transitions():
        if edge.source not in position or edge.target not in position:
            continue
        (x1, y1), (x2, y2) = position[edge.source], position[edge.target]
        colour = _PALETTE.get(edge.name, "#607d8b")
        # Bend each arrow towards the centre, so that a -> b and b -> a do not overlap.
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        qx, qy = mx + (cx - mx) * 0.25, my + (cy - my) * 0.25
        # End on the target's ellipse edge, not its centre.
        dx, dy = x2 - qx, y2 - qy
        length = math.hypot(dx, dy) or 1
        scale = 1 / math.sqrt((dx / length / node_rx) ** 2 + (dy / length / node_ry) ** 2)
        ex, ey = x2 - dx / length * scale, y2 - dy / length * scale
        sdx, sdy = qx - x1, qy - y1
        slen = math.hypot(sdx, sdy) or 1
        sscale = 1 / math.sqrt((sdx / slen / node_rx) ** 2 + (sdy / slen / node_ry) ** 2)
        sx, sy = x1 + sdx / slen * sscale, y1 + sdy / slen * sscale
        parts.append(
            f'<path d="M{sx:.1f},{sy:.1f} Q{qx:.1f},{qy:.1f} {ex:.1f},{ey:.1f}" fill="none" '
            f'stroke="{colour}" stroke-width="1.4" opacity="0.8" marker-end="url(#arrow{colour[1:]})">'
            f"<title>{escape(edge.name)}: {escape(edge.source)} → {escape(edge.target)}</title></path>"
        )
    for state, (x, y) in position.items():
        parts.append(
            f'<g><title>{escape(state)}</title><ellipse cx="{x:.1f}" cy="{y:.1f}" rx="{node_rx}" '
            f'ry="{node_ry}" fill="{_fill(state)}" stroke="#37474f" stroke-width="1.2"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{escape(state)}</text></g>'
        )
    legend_y = 20
    for name, colour in _PALETTE.items():
        parts.append(
            f'<line x1="12" y1="{legend_y}" x2="40" y2="{legend_y}" stroke="{colour}" stroke-width="2"/>'
            f'<text x="46" y="{legend_y + 4}">{escape(name)}</text>'
        )
        legend_y += 18
    parts.append(
        f'<line x1="12" y1="{legend_y}" x2="40" y2="{legend_y}" stroke="#607d8b" stroke-width="2"/>'
        f'<text x="46" y="{legend_y + 4}">other transitions</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def state_machine_svg() -> tuple[str, str]:
    """(svg, how it was drawn)."""
    drawn = graphviz_svg()
    if drawn:
        return drawn, "graph_transitions (Graphviz)"
    return own_svg(), "drawn from the model's transitions (Graphviz is not installed)"
