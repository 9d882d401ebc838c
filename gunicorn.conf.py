"""gunicorn settings shared by every way the project starts it (the Procfile, `manage.py chaos`,
the benchmarks): gunicorn reads `./gunicorn.conf.py` from its working directory, the repository
root. What differs between them (address, workers, threads) stays on their command lines."""

from typing import Any

from config import env_file

# The .env file, before anything here or in the workers reads the environment (LOG_FORMAT below,
# PROMETHEUS_MULTIPROC_DIR in the workers): what it sets counts as the settings count it.
env_file.load()

# One access log line per request with how long it took (%(M)s, milliseconds), so that a slow
# request is visible in the log without a profiler: client address, time, request line, status,
# response bytes, duration, user agent.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
# %(h)s is the client's address behind TRUSTED_PROXY_COUNT proxies, not the proxy's (the rule the
# rate limits use; X-Forwarded-For is ignored at 0, the default outside production).
logger_class = "config.access_log.AccessLogger"


def _json_lines() -> None:
    """LOG_FORMAT=json: gunicorn's own lines (its errors and the access log) as JSON objects too,
    one per line, on the handlers gunicorn set up (config/logging.py, JsonFormatter)."""
    import logging
    import os

    if os.environ.get("LOG_FORMAT") != "json":
        return
    from config.logging import JsonFormatter

    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(JsonFormatter())


def _errors_in_the_one_shape() -> None:
    """A request gunicorn refuses before the application sees it (a URL or a header too long, a
    request line it cannot read) is answered in the one error shape, not gunicorn's HTML page:
    every worker calls `gunicorn.util.write_error` for it (config/raw_errors.py)."""
    from gunicorn import util

    from config.raw_errors import gunicorn_write_error

    util.write_error = gunicorn_write_error


# The master's handlers (set up again on a reload) and each worker's, inherited at the fork.
def on_starting(server: object) -> None:
    _json_lines()
    _errors_in_the_one_shape()


def on_reload(server: object) -> None:
    _json_lines()


def post_fork(server: object, worker: object) -> None:
    _json_lines()


def child_exit(server: object, worker: Any) -> None:
    """A worker ended, killed or not: its live gauges leave the metrics directory now, before a
    new worker can be given its pid (config/metrics/dead_processes.py). In the master."""
    import os

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from config.metrics.dead_processes import forget_process

        forget_process(worker.pid, directory)
