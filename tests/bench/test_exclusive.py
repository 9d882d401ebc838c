"""One benchmark at a time: they share a Redis database (flushed at start and end) and the
partner queue names, so a second run would consume and flush the first one's messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.common import exclusive_run


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    lock_path = tmp_path / "bench.lock"
    first = exclusive_run(lock_path)

    with pytest.raises(RuntimeError, match="another benchmark is running") as refused:
        exclusive_run(lock_path)
    assert "pid " in str(refused.value)  # who holds it

    first.close()
    exclusive_run(lock_path).close()  # free again once the first is done


def test_the_lock_is_released_when_its_process_dies(tmp_path):
    lock_path = tmp_path / "bench.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, time; from bench.common import exclusive_run; "
            f"lock = exclusive_run(pathlib.Path({str(lock_path)!r})); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=f"pid {holder.pid}"):
            exclusive_run(lock_path)
    finally:
        holder.kill()
        holder.wait(10)

    exclusive_run(lock_path).close()
