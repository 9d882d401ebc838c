"""The direction of imports between the apps, as docs/design.md ("Apps and who owns what") states
it: the core at the bottom, the partner and payment sides above it, the support tooling above
them, and the proving tools (chaos, bench, sandbox) outside the product.

Every import counts, a function-level one too ("to avoid a cycle" is how a wrong arrow hides).
A lazy reference by name (`"partners.Partner"`, a dotted path in settings) is not an import and
is how the core names what sits above it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from django.apps import apps
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
PRODUCT = ("bookings", "partners", "payments", "reconciliation", "config")
TOOLS = ("chaos", "bench", "sandbox")
OURS = (*PRODUCT, *TOOLS, "tests")

# What each package may import of ours, besides itself.
ALLOWED: dict[str, set[str]] = {
    "bookings": {"config"},
    "partners": {"bookings", "config"},
    "payments": {"bookings", "config"},
    "reconciliation": {"bookings", "partners", "payments", "config"},
    "config": set(),
    "sandbox": set(),  # it stands for a partner: nothing of ours, nor Django
    "chaos": {*PRODUCT, "sandbox"},
    "bench": {*PRODUCT, "sandbox"},
}
# The wiring: the modules that put every app's URLs and views into one site may import them all.
WIRING = {"config/urls.py", "config/urls_bench.py", "config/asgi.py", "config/router.py"}


def imported_packages(source: str) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every absolute import in the source, at any depth."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            yield node.lineno, name.split(".")[0]


def violations(package: str, path: str, source: str) -> list[str]:
    allowed = {package, *ALLOWED[package]}
    if path in WIRING:
        allowed |= set(PRODUCT)
    return [
        f"{path}:{line} imports {imported}"
        for line, imported in imported_packages(source)
        if imported in OURS and imported not in allowed
    ]


def test_every_import_between_our_packages_points_the_allowed_way():
    found = []
    for package in ALLOWED:
        for file in sorted((ROOT / package).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            found += violations(package, path, file.read_text())

    assert found == []


def test_every_app_of_ours_has_a_rule():
    ours = {
        Path(config.path).relative_to(ROOT).parts[0]
        for config in apps.get_app_configs()
        if Path(config.path).is_relative_to(ROOT) and not Path(config.path).is_relative_to(ROOT / ".venv")
    }

    assert {"bookings", "partners", "reconciliation", "chaos"} <= ours <= set(ALLOWED)


def test_the_check_catches_a_wrong_arrow_even_inside_a_function():
    source = "from bookings.models import Booking\n\ndef later():\n    from partners.tasks import submit\n"

    assert violations("bookings", "bookings/x.py", source) == ["bookings/x.py:4 imports partners"]
    assert violations("partners", "partners/x.py", "import reconciliation.selectors\n") == [
        "partners/x.py:1 imports reconciliation"
    ]
    assert violations("config", "config/urls.py", "from partners import views\n") == []
    assert violations("bookings", "bookings/x.py", "import chaos\nimport tests.helpers\n") == [
        "bookings/x.py:1 imports chaos",
        "bookings/x.py:2 imports tests",
    ]
