"""The sandbox is a partner system, not part of ours: it imports none of our packages (nor
Django), so it runs, and fails, like any other partner would."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"bookings", "partners", "payments", "reconciliation", "config", "chaos", "bench", "tests", "django"}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


SANDBOX_MODULES = sorted((ROOT / "sandbox").rglob("*.py"))


def test_the_sandbox_has_modules_to_check() -> None:
    names = {path.name for path in SANDBOX_MODULES}
    assert {"app.py", "ledger.py", "reference.py", "legacy.py", "webhooks.py", "server.py"} <= names


@pytest.mark.parametrize("path", SANDBOX_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sandbox_module_imports_nothing_of_ours(path: Path) -> None:
    assert _imported_packages(path) & OURS == set()


def test_the_checker_sees_an_import_of_ours(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import json\nfrom bookings.models import Booking\nfrom . import wire\n")
    assert _imported_packages(module) & OURS == {"bookings"}
