"""`make run`: every process of the Procfile under honcho, with the embedded Redis when no
REDIS_URL is set. Stops everything it started (the Redis server too) on Ctrl-C.

Nothing dies for good while it runs: honcho stops every process as soon as one exits, so each
line of the Procfile runs under `config.respawn`, which starts its process again (the Procfile
itself keeps the bare commands, for production's process manager); and a thread starts the
embedded Redis again on its socket if it ends (`keep_redis_running`). `PROCFILE` (honcho's own
variable) names another Procfile.

A stack already running here (another `make run`, or the processes of one killed abruptly, which
honcho keeps running) holds our ports and the embedded Redis's socket: the start then stops
before it touches anything (the metrics directory, the Redis server), naming the port or socket,
the processes holding it and how to stop them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from honcho.environ import parse_procfile

from config import embedded_redis, env_file, listeners, respawn

BASE_DIR = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Start the stack; with `--check`, only say whether one is running here already (exit 1 if
    so): `make run` asks that before it migrates or loads the demo data into that stack's
    database."""
    check_only = "--check" in (sys.argv[1:] if argv is None else argv)
    env_file.load()  # VAR_DIR, PORT, REDIS_URL, ... may come from .env
    env = dict(os.environ)
    var_dir = Path(env.get("VAR_DIR", BASE_DIR / "var"))
    port = env.get("PORT", "8000")
    # The servers (config/wsgi.py, config/asgi.py) default to production's settings; this stack is
    # the development one, unless .env or the environment names another.
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
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
    held = already_running(env, var_dir)
    if held:
        print(refusal(held), file=sys.stderr, flush=True)
        return 1
    if check_only:
        return 0
    # Every process writes its counters into one directory that /metrics sums (config/metrics),
    # emptied here, before any of them runs: no earlier run's processes are summed. A respawned
    # process adds its files beside the others' (emptied under them, their counts would vanish).
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = var_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    redis_server, redis_keeper, stopping = None, None, threading.Event()
    if not env.get("REDIS_URL"):
        redis_server = embedded_redis.EmbeddedRedis(var_dir).start()
        env["REDIS_URL"] = redis_server.url
        print(f"embedded redis-server on {redis_server.socket}", flush=True)
        if redis_server.process is not None:  # not one found running: that one is not ours to keep
            redis_keeper = threading.Thread(
                target=keep_redis_running, args=(redis_server, stopping), name="redis-keeper", daemon=True
            )
            redis_keeper.start()
    (var_dir / "sandbox").mkdir(parents=True, exist_ok=True)
    procfile = supervised_procfile(Path(env.get("PROCFILE", BASE_DIR / "Procfile")), var_dir)
    process = subprocess.Popen(honcho_command(procfile, BASE_DIR, port), env=env, cwd=BASE_DIR)

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
        stopping.set()
        if redis_keeper is not None:
            redis_keeper.join()  # a start under way ends first; then nothing starts it again
        if redis_server is not None:
            redis_server.stop()


# Our own servers' ports (the sandboxes' are the Procfile's), by the Procfile line listening on each.
OWN_PORTS = (
    ("ROUTER_PORT", "router"),
    ("WEB_PORT", "web"),
    ("EVENTS_PORT", "events"),
    ("WEBHOOK_PORT", "webhooks"),
    ("MAIL_PORT", "mail"),
)


def already_running(env: dict[str, str], var_dir: Path) -> list[listeners.Held]:
    """What this start needs that something already holds: our ports, and the embedded Redis's
    socket when a server answers on it (reused, it would be stopped by nobody and emptied under
    the other stack's processes when ours stops)."""
    held = []
    for variable, process in OWN_PORTS:
        port = int(env[variable])
        if listeners.port_in_use(port):
            held.append(listeners.Held(f"port {port} ({process})", listeners.tcp_listeners(port)))
    if not env.get("REDIS_URL"):
        socket = embedded_redis.socket_path(var_dir)
        if embedded_redis.responds(socket):
            held.append(
                listeners.Held(f"the embedded Redis's socket {socket}", listeners.unix_listeners(socket))
            )
    return held


# A process of a `make run` (this module), or of the honcho one left behind: signalled with
# SIGINT, either stops every process it started, as Ctrl-C does.
_STACK_ROOTS = (
    (" -m config.devstack ", "its make run: stops every process it started, the embedded Redis too"),
    (" -m honcho ", "honcho, left running without its make run: stops every process of the Procfile"),
)


def refusal(held: list[listeners.Held]) -> str:
    """What is in use, by which processes, and the commands that stop them."""
    lines = ["make run: not starting (nothing was touched): a stack seems to be running here already."]
    stop: dict[int, tuple[str, str]] = {}  # pid -> (the command that stops it, what it stops)
    strangers: list[int] = []
    for item in held:
        if not item.pids:
            lines.append(f"  {item.what}: in use (by a process not found: another user's?)")
            continue
        pids = ", ".join(str(pid) for pid in item.pids)
        lines.append(f"  {item.what}: pid{'s' if len(item.pids) > 1 else ''} {pids} ({_short(item.pids[0])})")
        for pid in item.pids:
            root = _stack_root(pid)
            if root is not None:
                stop.setdefault(root[0], (f"kill -INT {root[0]}", root[1]))
            elif "Redis" in item.what:  # the embedded server outlives a make run killed abruptly
                stop.setdefault(pid, (f"kill {pid}", "the embedded Redis server, left without its make run"))
            elif pid not in strangers:
                strangers.append(pid)
    if stop:
        lines.append("Stop it with Ctrl-C in its make run's terminal or, if that is gone:")
        lines += [f"  {command:<18} # {what}" for command, what in stop.values()]
    if strangers:
        pids = ", ".join(str(pid) for pid in strangers)
        lines.append(f"pid {pids}: no make run's; stop it, or start on other ports (PORT=...).")
    return "\n".join(lines)


def _short(pid: int, width: int = 100) -> str:
    command = listeners.command_line(pid)
    return command if len(command) <= width else command[: width - 3] + "..."


def _stack_root(pid: int) -> tuple[int, str] | None:
    """The process to signal to stop the stack `pid` belongs to, and what it is; None if none."""
    chain = [pid, *listeners.ancestors(pid)]
    for marker, what in _STACK_ROOTS:
        found = [candidate for candidate in chain if marker in f" {listeners.command_line(candidate)} "]
        if found:
            return found[-1], what
    return None


def honcho_command(procfile: Path, app_root: Path, port: str) -> list[str]:
    """honcho over `procfile`, given no env file of its own: it would read `.env` again and let the
    file win over the environment (its processes get `os.environ` updated by the file), so a
    variable exported for `make run` would reach `manage.py migrate` but not the processes.
    `env_file.load()` has read the file already, the environment winning, as every process does."""
    return [
        *(sys.executable, "-m", "honcho", "start", "-f", str(procfile), "-d", str(app_root)),
        *("-p", port, "--env", os.devnull),
    ]


def supervised_procfile(source: Path, var_dir: Path) -> Path:
    """`source` with each process under `config.respawn`, written to `var_dir`, for honcho."""
    processes = parse_procfile(source.read_text()).processes
    target = Path(var_dir) / "Procfile.make-run"
    lines = [f"# {source} with each process under config.respawn (config/devstack.py writes it)"]
    lines += [f"{name}: {respawn.wrap(name, command)}" for name, command in processes.items()]
    target.write_text("\n".join(lines) + "\n")
    return target


def keep_redis_running(server: embedded_redis.EmbeddedRedis, stopping: threading.Event) -> None:
    """Start the embedded Redis again on its socket whenever its process ends, until `stopping`:
    every client reconnects to the same socket by itself. Its data is gone (it keeps none): the
    sweeper queues again what the database says is due."""
    backoff = respawn.Backoff()
    started = time.monotonic()
    while not stopping.is_set():
        process = server.process  # None after a start that failed
        if process is not None and process.poll() is None:
            stopping.wait(0.5)
            continue
        delay = backoff.after(time.monotonic() - started)
        ended = respawn.describe(process.returncode) if process is not None else "is not running"
        _say(f"embedded redis-server {ended}; starting it again on {server.socket} in {delay:g} s")
        if stopping.wait(delay):
            return
        started = time.monotonic()
        try:
            server.start()
        except RuntimeError as exc:
            _say(f"embedded redis-server: {exc}")
            continue
        if server.process is process:  # start() found another server answering on the socket
            _say(f"embedded redis-server: another one answers on {server.socket}; not watching it")
            return
        _say(f"embedded redis-server on {server.socket} again")


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
