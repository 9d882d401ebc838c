"""Template source rules that Django does not enforce itself."""

from __future__ import annotations

from pathlib import Path

import pytest

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def _templates() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html")) + sorted(TEMPLATES.rglob("*.txt"))


@pytest.mark.parametrize("template", _templates(), ids=lambda path: str(path.relative_to(TEMPLATES)))
def test_every_short_comment_closes_on_its_own_line(template: Path) -> None:
    """`{# ... #}` is a one-line comment: one that runs on to another line is not a comment at
    all, and Django renders it as text on the page. Longer ones are `{% comment %}`."""
    unclosed = [
        number
        for number, line in enumerate(template.read_text().splitlines(), start=1)
        if line.count("{#") > line.count("#}")
    ]
    assert not unclosed, f"{template.name}: a {{# comment not closed on line(s) {unclosed}"
