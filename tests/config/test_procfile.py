"""The Procfile (what `make run` starts with honcho, and the shape of production): partner
webhooks are received by their own gunicorn, never by the customers' one."""

from __future__ import annotations

import signal
import subprocess

from django.conf import settings

from config import devstack


def _processes() -> dict[str, str]:
    lines = (settings.BASE_DIR / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_partner_webhooks_have_their_own_gunicorn_and_the_sandbox_calls_it():
    processes = _processes()

    assert processes["web"].startswith("gunicorn ") and "${WEB_PORT}" in processes["web"]
    assert processes["webhooks"].startswith("gunicorn ")
    assert "--bind 127.0.0.1:${WEBHOOK_PORT}" in processes["webhooks"]
    assert "--webhook-url http://127.0.0.1:${WEBHOOK_PORT}/partners/" in processes["sandbox_reference"]
    assert not any("${WEB_PORT}" in command for name, command in processes.items() if name != "web")


class _FakeHoncho:
    """Stands in for the honcho process (the edge of this unit test): records its environment."""

    started: list[dict[str, str]] = []

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: object) -> None:
        _FakeHoncho.started.append(env)

    def wait(self) -> int:
        return 0


def test_make_run_puts_the_webhook_receiver_on_the_port_after_the_web_server(monkeypatch, tmp_path):
    monkeypatch.setattr(subprocess, "Popen", _FakeHoncho)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)  # pytest keeps its own
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")  # no embedded Redis needed
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.delenv("WEB_PORT", raising=False)
    monkeypatch.delenv("WEBHOOK_PORT", raising=False)
    _FakeHoncho.started.clear()

    assert devstack.main() == 0

    (env,) = _FakeHoncho.started
    assert (env["WEB_PORT"], env["WEBHOOK_PORT"]) == ("9000", "9001")
