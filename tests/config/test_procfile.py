"""The Procfile (what `make run` starts with honcho, and the shape of production): partner
webhooks are received by their own gunicorn, never by the customers' one; the browser's one
address is the router's, which sends the live status streams to the events process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from honcho.environ import parse_procfile

from config import devstack, respawn
from tests.sandbox_process import free_port


def _processes() -> dict[str, str]:
    lines = (settings.BASE_DIR / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_partner_webhooks_have_their_own_gunicorn_and_the_sandbox_calls_it():
    processes = _processes()

    assert processes["web"].startswith("gunicorn ") and "${WEB_PORT}" in processes["web"]
    assert processes["webhooks"].startswith("gunicorn ")
    assert "--bind 127.0.0.1:${WEBHOOK_PORT}" in processes["webhooks"]
    assert "--webhook-url http://127.0.0.1:${WEBHOOK_PORT}/partners/" in processes["sandbox_reference"]
    # Only the router in front of it sends requests there.
    others = [command for name, command in processes.items() if name not in {"web", "router"}]
    assert not any("${WEB_PORT}" in command for command in others)


def test_the_router_takes_the_browsers_port_and_sends_the_streams_to_the_events_process():
    processes = _processes()

    assert processes["router"] == (
        "python -m config.router --port ${ROUTER_PORT} --web ${WEB_PORT} --events ${EVENTS_PORT}"
    )
    assert processes["events"] == "python -m config.events --port ${EVENTS_PORT}"


class _FakeHoncho:
    """Stands in for the honcho process (the edge of this unit test): records its environment."""

    started: list[dict[str, str]] = []
    argv: list[list[str]] = []
    signalled: list[int] = []

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: object) -> None:
        _FakeHoncho.started.append(env)
        _FakeHoncho.argv.append(argv)

    def wait(self) -> int:
        return 0

    def send_signal(self, signum: int) -> None:
        _FakeHoncho.signalled.append(signum)


def test_make_run_puts_the_router_on_its_port_and_the_servers_behind_it_on_the_next(monkeypatch, tmp_path):
    monkeypatch.setattr(subprocess, "Popen", _FakeHoncho)
    monkeypatch.setattr(devstack, "already_running", lambda env, var_dir: [])  # ports: not this unit's
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)  # pytest keeps its own
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")  # no embedded Redis needed
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.delenv("WEB_PORT", raising=False)
    for name in ("ROUTER_PORT", "WEBHOOK_PORT", "EVENTS_PORT", "TRUSTED_PROXY_COUNT"):
        monkeypatch.delenv(name, raising=False)
    _FakeHoncho.started.clear()

    assert devstack.main() == 0

    (env,) = _FakeHoncho.started
    ports = [env[name] for name in ("ROUTER_PORT", "WEBHOOK_PORT", "WEB_PORT", "EVENTS_PORT")]
    assert ports == ["9000", "9001", "9002", "9003"]
    assert env["TRUSTED_PROXY_COUNT"] == "1"  # the router adds the client's address


def test_make_run_passes_any_stop_signal_sent_to_it_alone_on_to_honcho(monkeypatch, tmp_path):
    handlers = {}
    monkeypatch.setattr(subprocess, "Popen", _FakeHoncho)
    monkeypatch.setattr(devstack, "already_running", lambda env, var_dir: [])  # ports: not this unit's
    monkeypatch.setattr(signal, "signal", lambda signum, handler: handlers.__setitem__(signum, handler))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    _FakeHoncho.signalled.clear()
    assert devstack.main() == 0

    # `kill -INT <make run's pid>` reaches only us, not honcho's process group: we pass it on,
    # as TERM and HUP, so nothing make run started outlives it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        handlers[signum](signum, None)
    assert _FakeHoncho.signalled == [signal.SIGINT] * 3


def test_make_run_runs_each_line_of_the_procfile_under_respawn_and_the_procfile_stays_bare(
    monkeypatch, tmp_path
):
    # honcho stops every process when one exits: under make run each is started again instead
    # (config/respawn.py). A deployment runs the Procfile's commands under its own process
    # manager, which restarts them: the Procfile itself holds them bare.
    monkeypatch.setattr(subprocess, "Popen", _FakeHoncho)
    monkeypatch.setattr(devstack, "already_running", lambda env, var_dir: [])  # ports: not this unit's
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.delenv("PROCFILE", raising=False)
    _FakeHoncho.argv.clear()
    assert devstack.main() == 0

    (argv,) = _FakeHoncho.argv
    given = Path(argv[argv.index("-f") + 1])
    processes = _processes()
    assert parse_procfile(given.read_text()).processes == {
        name: respawn.wrap(name, command) for name, command in processes.items()
    }
    assert not any("respawn" in command for command in processes.values())


def test_make_run_names_what_holds_a_port_it_needs_before_touching_anything(monkeypatch, tmp_path, capsys):
    # Two whole stacks: test_make_run_supervision.py. Here the web port is held by this process.
    monkeypatch.setattr(subprocess, "Popen", _FakeHoncho)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    stale = tmp_path / "metrics" / "counter_4242.db"  # a running process's counters
    stale.parent.mkdir()
    stale.write_bytes(b"\0" * 16)
    for name in ("PORT", "WEBHOOK_PORT", "EVENTS_PORT", "MAIL_PORT"):
        monkeypatch.setenv(name, str(free_port()))
    _FakeHoncho.started.clear()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        monkeypatch.setenv("WEB_PORT", str(port))

        assert devstack.main(["--check"]) == 1  # what `make run` asks before migrate and the demo
        assert devstack.main() == 1

    assert _FakeHoncho.started == [] and stale.exists()  # nothing started, nothing emptied
    said = capsys.readouterr().err
    assert f"  port {port} (web): pid {os.getpid()} (" in said, said
    assert f"pid {os.getpid()}: no make run's; stop it, or start on other ports (PORT=...)." in said, said


def test_make_run_asks_whether_a_stack_runs_before_it_migrates_or_loads_the_demo(monkeypatch, tmp_path):
    """The check came inside config.devstack, after make had migrated the running stack's
    database and reset its demo users' passwords: "nothing was touched" was not true."""
    # Run as `make test` runs us, make says which directory it enters: its lines, not commands.
    outside_make = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    printed = subprocess.run(
        ["make", "-n", "run"],
        cwd=settings.BASE_DIR,
        env=outside_make,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    planned = [line for line in printed if not line.startswith("make[")]
    step = {
        name: next(i for i, line in enumerate(planned) if marker in line)
        for name, marker in (
            ("check", "-m config.devstack --check"),
            ("migrate", "manage.py migrate"),
            ("demo", "manage.py create_demo_data"),
        )
    }
    assert step["check"] < step["migrate"] < step["demo"], planned
    assert planned[-1].endswith("-m config.devstack"), planned

    monkeypatch.setattr(subprocess, "Popen", _FakeHoncho)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.setattr(devstack, "already_running", lambda env, var_dir: [])
    _FakeHoncho.started.clear()
    assert devstack.main(["--check"]) == 0 and _FakeHoncho.started == []  # checks, starts nothing


@pytest.mark.once_per_ci("embedded")  # /proc and a socket: no store of ours
def test_a_busy_process_holding_a_port_is_named_though_its_descriptors_come_and_go():
    # The test process itself, under load, opens and closes descriptors in other threads all the
    # time: one closed between the listing of /proc/<pid>/fd and its readlink hid the process (CI).
    import threading

    from config import listeners

    stop = threading.Event()

    def churn() -> None:  # descriptors below the listening socket's, opened and closed
        while not stop.is_set():
            opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]
            for fd in opened:
                os.close(fd)

    below = [os.open(os.devnull, os.O_RDONLY) for _ in range(80)]  # the socket's number comes after
    with socket.socket() as holder:
        for fd in below:
            os.close(fd)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        churners = [threading.Thread(target=churn) for _ in range(4)]
        for thread in churners:
            thread.start()
        try:
            found = [os.getpid() in listeners.tcp_listeners(holder.getsockname()[1]) for _ in range(100)]
        finally:
            stop.set()
            for thread in churners:
                thread.join()

    assert all(found), f"named {sum(found)} times of {len(found)}"
