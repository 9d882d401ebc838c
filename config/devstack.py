"""`make run`: every process of the Procfile under honcho, with the embedded Redis when no
REDIS_URL is set. Stops everything it started (the Redis server too) on Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from config import embedded_redis, env_file

BASE_DIR = Path(__file__).resolve().parent.parent


def main() -> int:
    env_file.load()  # VAR_DIR, PORT, REDIS_URL, ... may come from .env
    env = dict(os.environ)
    var_dir = Path(env.get("VAR_DIR", BASE_DIR / "var"))
    port = env.get("PORT", "8000")
    # The browser's one address is the router's (Procfile `router`): the live status streams go
    # to the events process, everything else to the web server, each on a port of its own.
    env.setdefault("ROUTER_PORT", port)
    env.setdefault("WEB_PORT", str(int(port) + 2))
    env.setdefault("EVENTS_PORT", str(int(port) + 3))
    # The router adds the client's address to X-Forwarded-For (rate limits, login lockouts).
    env.setdefault("TRUSTED_PROXY_COUNT", "1")
    # Partner webhooks have their own gunicorn (Procfile `webhooks`), on the next port.
    env.setdefault("WEBHOOK_PORT", str(int(port) + 1))
    # Mail goes to the local sink (Procfile `mail`), which keeps each message under var/mail/.
    env.setdefault("MAIL_PORT", str(int(port) + 25))
    env.setdefault("EMAIL_URL", f"smtp://127.0.0.1:{env['MAIL_PORT']}")
    env.setdefault("SITE_URL", f"http://127.0.0.1:{port}")  # the booking links in that mail
    # Every process writes its counters into one directory that /metrics sums (config/metrics),
    # emptied at each start as a process manager does: no earlier run's processes are summed.
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = var_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    redis_server = None
    if not env.get("REDIS_URL"):
        redis_server = embedded_redis.EmbeddedRedis(var_dir).start()
        env["REDIS_URL"] = redis_server.url
        print(f"embedded redis-server on {redis_server.socket}", flush=True)
    (var_dir / "sandbox").mkdir(parents=True, exist_ok=True)
    honcho = [sys.executable, "-m", "honcho", "start", "-f", str(BASE_DIR / "Procfile"), "-p", port]
    process = subprocess.Popen(honcho, env=env, cwd=BASE_DIR)

    def stop_processes(signum: int, frame: object) -> None:
        # Any of these sent to us alone (a `kill -INT` included, not only TERM or HUP) must be
        # passed on, or honcho and its children would outlive us. Ctrl-C also reaches honcho
        # directly (same process group): a second SIGINT changes nothing, honcho stops once.
        process.send_signal(signal.SIGINT)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_processes)
    try:
        return process.wait()
    finally:
        if redis_server is not None:
            redis_server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
