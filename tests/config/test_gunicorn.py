"""gunicorn as the Procfile runs it: its access log says how long each request took."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time

from django.conf import settings

from tests.sandbox_process import free_port


def test_the_access_log_line_of_a_request_carries_its_duration(tmp_path):
    port = free_port()
    log = tmp_path / "access.log"
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--access-logfile", str(log), "--no-control-socket"],
        cwd=settings.BASE_DIR,  # where gunicorn finds gunicorn.conf.py
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/healthz")
                status = connection.getresponse().status
                connection.close()
                break
            except OSError:
                assert gunicorn.poll() is None, gunicorn.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "gunicorn did not answer within 30 s"
                time.sleep(0.2)
        deadline = time.monotonic() + 10
        while "/healthz" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)

    line = next(line for line in log.read_text().splitlines() if "/healthz" in line)
    # address [time] "request line" status bytes duration "user agent" (http.client sends none)
    pattern = rf'127\.0\.0\.1 \[[^]]+\] "GET /healthz HTTP/1\.1" {status} \d+ \d+ms "-"'
    assert re.fullmatch(pattern, line), line
