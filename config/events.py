"""The events process: the live status streams (config/asgi.py, bookings/streams) under uvicorn.

`python -m config.events --port N` is the Procfile's `events`; `command()` gives the same command
line to the tests and the benchmarks. Production runs it behind the proxy that routes the stream
paths to it (docs/design.md, "Live status"), `--workers` processes per machine.
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from config import env_file

# Streams still open this long after a shutdown began are cancelled; the hub then ends the rest
# (each stream's client reconnects, to another process or to this one restarted).
GRACEFUL_SHUTDOWN_S = 3


def command(*, port: int, host: str = "127.0.0.1", workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "config.events",
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m config.events", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="processes (each with its own hub)")
    args = parser.parse_args(argv)
    env_file.load()  # LOG_FORMAT below may come from .env, as the settings' does
    uvicorn.run(
        "config.asgi:application",
        host=args.host,
        port=args.port,
        workers=args.workers,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # Clients' addresses are read by Django from X-Forwarded-For (TRUSTED_PROXY_COUNT), as in
        # the web process; uvicorn must not rewrite the connection's address first.
        proxy_headers=False,
        # A stream's access line would say only that it began; errors still reach the log.
        access_log=False,
        log_level="warning",
        # LOG_FORMAT=json: uvicorn's lines go to the project's handlers (config/logging.py).
        log_config=None if os.environ.get("LOG_FORMAT") == "json" else uvicorn.config.LOGGING_CONFIG,
    )


if __name__ == "__main__":
    main()
