"""Worker processes lower their CPU priority so that the customer path gets the CPU first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from config.worker_priority import session_is_ours

AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")


def _fake_proc(tmp_path: Path, processes: dict[int, tuple[str, int, int]]) -> Path:
    """A /proc with `pid: (command, parent pid, session id)` for each process."""
    for pid, (command, parent, session) in processes.items():
        (tmp_path / str(pid)).mkdir()
        stat = f"{pid} ({command}) S {parent} {session} {session} 0 -1 4194560\n"
        (tmp_path / str(pid) / "stat").write_text(stat)
    (tmp_path / "self").mkdir()
    return tmp_path


def test_a_session_of_the_launcher_and_its_worker_processes_is_the_workers_own(tmp_path):
    proc = _fake_proc(
        tmp_path,
        {
            1: ("systemd", 0, 1),
            100: ("sh", 1, 100),  # honcho's shell, the session leader
            101: ("dramatiq", 100, 100),
            102: ("dramatiq: worker (1)", 101, 100),  # this process
            103: ("dramatiq: worker (2)", 101, 100),
            104: ("python (forked)", 103, 100),
            200: ("gunicorn", 1, 200),  # another session: does not count
        },
    )

    assert session_is_ours(102, proc)


def test_a_session_shared_with_another_program_is_not_the_workers_own(tmp_path):
    proc = _fake_proc(
        tmp_path,
        {
            100: ("bash", 1, 100),  # one shell started web and workers together
            101: ("dramatiq", 100, 100),
            102: ("dramatiq: worker (1)", 101, 100),
            150: ("gunicorn: worker [config.wsgi:application]", 100, 100),
        },
    )

    assert not session_is_ours(102, proc)


def test_a_command_with_spaces_and_parentheses_is_parsed(tmp_path):
    proc = _fake_proc(tmp_path, {100: ("a (b) c", 1, 100), 101: ("x) y", 100, 100)})

    assert session_is_ours(101, proc)


def _boot_worker_middleware(worker_nice: int) -> dict:
    """Run the middleware's boot hook in a fresh process of its own session (as honcho starts
    the worker); what it did, and the process's nice value and autogroup afterwards."""
    script = (
        "import django, json, os; django.setup(); "
        "from config.worker_priority import WorkerPriorityMiddleware; "
        "WorkerPriorityMiddleware().before_worker_boot(None, None); "
        "path = '/proc/self/autogroup'; "
        "autogroup = open(path).read().strip() if os.path.exists(path) else None; "
        "print(json.dumps({'nice': os.nice(0), 'autogroup': autogroup}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.base", "WORKER_NICE": str(worker_nice)},
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_booting_worker_process_lowers_its_priority_and_its_sessions():
    before = os.nice(0)

    after = _boot_worker_middleware(7)

    assert after["nice"] == max(7, before)
    if AUTOGROUP_ENABLED.exists() and AUTOGROUP_ENABLED.read_text().strip() == "1":
        assert after["autogroup"].endswith("nice 7")
    assert os.nice(0) == before  # the test process itself is untouched


def test_worker_nice_0_leaves_the_priority_alone():
    assert _boot_worker_middleware(0)["nice"] == os.nice(0)


def test_workers_get_the_middleware_and_the_test_process_keeps_its_priority():
    assert "config.worker_priority.WorkerPriorityMiddleware" in settings.DRAMATIQ_BROKER["MIDDLEWARE"]
    assert settings.WORKER_NICE == 0  # tests run Dramatiq workers inside the pytest process
