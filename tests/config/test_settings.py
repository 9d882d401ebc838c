"""Configuration: documented, secure in production, embedded services that clean up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from config import embedded_redis
from config import env_file as config_env_file
from tests import production

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_documents_every_variable_the_settings_read():
    read = set()
    for module in (ROOT / "config" / "settings").glob("*.py"):
        read |= set(
            re.findall(r'env\.(?:str|int|bool|float|list|rate|decimal)\(\s*"([A-Z_]+)"', module.read_text())
        )
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read - documented == set()


def test_env_example_documents_every_variable_make_run_reads():
    read = set(
        re.findall(r'env\.(?:get|setdefault)\("([A-Z_]+)"', (ROOT / "config" / "devstack.py").read_text())
    )
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert {"PORT", "WEB_PORT"} <= read  # the pattern still finds what it reads
    assert read - documented == set()


def test_env_example_lists_each_variable_once():
    listed = re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M)
    assert sorted(name for name in set(listed) if listed.count(name) > 1) == []


@pytest.mark.parametrize("from_environment", [False, True], ids=["file", "environment"])
def test_an_empty_metrics_directory_is_unset_and_litters_no_working_directory(tmp_path, from_environment):
    # prometheus_client turns on its multiprocess mode when PROMETHEUS_MULTIPROC_DIR is present at
    # all, and writes `<type>_<pid>.db` files into os.path.join("", ...): the working directory,
    # one more set per process, never removed. `.env.example` copied to `.env` (as its first line
    # says) set it empty; so may an environment. Empty means unset, as the settings read it.
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    environment = {k: v for k, v in os.environ.items() if k.lower() != "prometheus_multiproc_dir"}
    environment.update(ENV_FILE=str(tmp_path / ".env"), PYTHONPATH=str(ROOT))
    if from_environment:
        environment["PROMETHEUS_MULTIPROC_DIR"] = ""
    code = (
        "import os; from config import env_file; env_file.load(); "
        "from config.metrics import events; from prometheus_client import values; "
        "events.PARTNER_CALLS.labels('p', 'create', 'ok').inc(); "
        "print('PROMETHEUS_MULTIPROC_DIR' in os.environ, values.ValueClass.__name__)"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "MutexValue"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [".env"]


_SETTINGS_JSON = (
    # As the web processes load them (config/wsgi.py sets what they wait on Redis unless set).
    "import json, config.wsgi; from django.conf import settings; "
    "print(json.dumps({name: getattr(settings, name) for name in dir(settings) if name.isupper()}, "
    "default=str))"
)


def test_env_example_copied_to_env_changes_no_production_setting(tmp_path):
    # An operator copies `.env.example` to `.env` and sets what production requires: whatever
    # else it holds must be production's own defaults. Its TRUSTED_PROXY_COUNT=0 made production
    # count every client as the proxy (one rate limit for the whole site, a login lockout for
    # everyone), and its relative VAR_DIR moved with each process's working directory.
    copied = tmp_path / "copied.env"
    copied.write_text((ROOT / ".env.example").read_text())
    empty = tmp_path / "empty.env"
    empty.write_text("")
    # The same environment for both: what production requires, and nothing else the file sets.
    required = production.environment()
    listed = set(re.findall(r"^([A-Z_]+)=", copied.read_text(), re.M))
    environment = {k: v for k, v in required.items() if k not in listed}
    environment.update({k: required[k] for k in (*production.REQUIRED, "SECRET_KEY")}, PYTHONPATH=str(ROOT))

    def settings_with(env_file: Path) -> dict:
        result = subprocess.run(
            [sys.executable, "-c", _SETTINGS_JSON],
            cwd=tmp_path,
            env={**environment, "ENV_FILE": str(env_file)},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    with_copy, without = settings_with(copied), settings_with(empty)

    assert {k: with_copy[k] for k in with_copy if with_copy[k] != without.get(k)} == {}


def _production_import(*unset: str, **env: str) -> subprocess.CompletedProcess:
    environment = production.environment(**env)
    for name in unset:
        environment.pop(name)
    code = "import django; django.setup(); print('started')"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True
    )


def _refused(result: subprocess.CompletedProcess) -> list[str]:
    """The names production's refusal lists, one line each."""
    assert result.returncode != 0
    assert "ImproperlyConfigured: config.settings.production does not start on these values" in result.stderr
    return re.findall(r"^- ([A-Z_]+) must ", result.stderr, re.M)


@pytest.mark.parametrize("secret", ["", "short", "dev-" + "x" * 60, "a" * 60])
def test_production_refuses_an_insecure_secret_key(secret):
    result = _production_import(SECRET_KEY=secret)
    assert _refused(result) == ["SECRET_KEY"]
    assert "SECRET_KEY must be set to a random value of at least 50 characters" in result.stderr


def test_production_starts_with_a_random_secret_key_and_what_it_requires():
    result = _production_import(SECRET_KEY="k3J9x" + "q8Zr2mVt7Lw4Ns1Pb6Hc0Yd5Fe" * 2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"


def test_production_refuses_the_development_defaults_naming_every_one_at_once():
    result = _production_import("SECRET_KEY", *production.REQUIRED)

    assert _refused(result) == [
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "STRIPE_API_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "SITE_URL",
    ]
    assert "started" not in result.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "sqlite:////tmp/bookings.sqlite3"),  # one file per machine
        ("DATABASE_URL", ""),  # empty is unset: the SQLite default
        ("STRIPE_API_KEY", "sk_test_sandbox_demo_key"),  # the sandbox's, as .env.example shows it
        ("STRIPE_WEBHOOK_SECRET", "whsec_sandbox_demo_payments_secret"),  # public: anyone could sign
        ("STRIPE_WEBHOOK_SECRET", ""),
        ("SITE_URL", "http://127.0.0.1:8000"),
        ("SITE_URL", "https://localhost"),
        ("SITE_URL", "http://[::1]:8000/"),
        ("SITE_URL", "bookings.example.com"),  # no scheme: no link
        ("REDIS_URL", ""),
    ],
)
def test_production_refuses_each_development_default(name, value):
    assert _refused(_production_import(**{name: value})) == [name]


def test_production_takes_the_embedded_redis_socket_only_when_it_is_named():
    result = _production_import(REDIS_URL="unix:///run/redis/redis.sock?db=0")  # a server of its own
    assert result.returncode == 0, result.stderr


def test_redis_urls_get_socket_timeouts_so_a_blocked_redis_cannot_hold_a_thread():
    url = embedded_redis.with_socket_timeouts("unix:///tmp/x/redis.sock?db=0", 5)
    assert url == "unix:///tmp/x/redis.sock?db=0&socket_timeout=5&socket_connect_timeout=5"
    kept = embedded_redis.with_socket_timeouts("redis://h:6379/1?socket_timeout=2", 5)
    assert kept == "redis://h:6379/1?socket_timeout=2&socket_connect_timeout=5"


def test_embedded_redis_starts_a_real_server_and_stops_it_without_leftovers(tmp_path):
    server = embedded_redis.EmbeddedRedis(tmp_path).start()
    client = redis.Redis(unix_socket_path=str(server.socket))
    assert client.set("k", "v") is True
    assert client.get("k") == b"v"
    pid = server.process.pid
    server.stop()
    assert not server.socket.exists()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(unix_socket_path=str(server.socket), socket_timeout=1).ping()


def test_postgres_connections_get_network_timeouts_and_the_database_urls_own_parameters_win():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DATABASE_URL": "postgres://app@db.internal:5432/bookings?connect_timeout=9&tcp_user_timeout=0",
        "DB_KEEPALIVES_IDLE_S": "7",
    }
    code = "import json; from django.conf import settings; "
    code += "print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "connect_timeout": 9,  # the URL's
        "tcp_user_timeout": 0,  # the URL's: the system's default
        "server_side_binding": True,
        "keepalives": 1,
        "keepalives_idle": 7,  # the variable's
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


def test_the_env_file_adds_what_the_environment_does_not_set(tmp_path, monkeypatch):
    env_file = tmp_path / "bookings.env"
    env_file.write_text("BOOKINGS_TEST_FROM_FILE=file\nBOOKINGS_TEST_IN_BOTH=file\n")
    monkeypatch.setenv("ENV_FILE", str(env_file))
    monkeypatch.setenv("BOOKINGS_TEST_IN_BOTH", "environment")
    monkeypatch.delenv("BOOKINGS_TEST_FROM_FILE", raising=False)  # and removed again after the test

    config_env_file.load()

    assert os.environ["BOOKINGS_TEST_FROM_FILE"] == "file"
    assert os.environ["BOOKINGS_TEST_IN_BOTH"] == "environment"


def test_an_env_file_named_but_missing_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ENV_FILE", str(tmp_path / "typo.env"))
    with pytest.raises(FileNotFoundError, match="ENV_FILE names"):
        config_env_file.load()


def test_manage_py_takes_the_settings_module_from_the_env_file(tmp_path):
    env_file = tmp_path / "bookings.env"
    env_file.write_text("DJANGO_SETTINGS_MODULE=config.settings.test\n")
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "from django.conf import settings; print(settings.SETTINGS_MODULE)"

    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**environment, "ENV_FILE": str(env_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "config.settings.test"  # not manage.py's default (dev)
