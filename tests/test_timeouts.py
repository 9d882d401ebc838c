"""A test's timeout bounds the test, not the shared set-ups it is the first to need
(tests/timeouts.py): run on a small suite of its own, in a pytest of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SUITE = """
import time

import pytest


@pytest.fixture(scope="module")
def slow_to_start():
    time.sleep(2)  # a server that a busy machine starts slowly, once for the module


@pytest.fixture(scope="module")
def never_starts():
    time.sleep(30)


@pytest.fixture
def slow_of_its_own():
    time.sleep(2)


@pytest.mark.timeout(1)
def test_first_to_need_a_slow_shared_start(slow_to_start):
    time.sleep(0.2)  # and then the test's own work, within its second


@pytest.mark.timeout(1)
def test_slow_in_its_own_body(slow_to_start):
    time.sleep(2)


@pytest.mark.timeout(1)
def test_slow_in_its_own_fixture(slow_of_its_own):
    pass


@pytest.mark.timeout(1)
def test_needs_a_shared_start_that_hangs(never_starts):
    pass
"""


@pytest.mark.once_per_ci("embedded")  # a pytest of its own, without Django: no store of ours
def test_a_shared_set_up_is_not_charged_to_the_test_that_needs_it_first(tmp_path: Path) -> None:
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.timeouts", "-p", "no:django", "-p", "no:xdist",
         "-p", "no:cacheprovider", "-o", "shared_setup_timeout=3", "-rA", "-q", "test_suite.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    said = done.stdout + done.stderr
    outcomes = {
        line.split("::")[-1].split()[0]: line.split()[0]
        for line in said.splitlines()
        if line.startswith(("PASSED ", "FAILED ", "ERROR "))
    }
    assert outcomes == {
        "test_first_to_need_a_slow_shared_start": "PASSED",
        "test_slow_in_its_own_body": "FAILED",  # the test's own timeout, as before
        "test_slow_in_its_own_fixture": "ERROR",
        "test_needs_a_shared_start_that_hangs": "ERROR",  # cut at the shared set-up's 3 s
    }, said
    assert "Timeout (>3.0s)" in said, said
