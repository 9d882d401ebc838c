"""`make run`: a variable exported in the environment wins over `.env` in every Procfile process,
as it does for `manage.py migrate` that make runs first (README "Configuration"). honcho reads
`.env` itself and lets the file win, so `config.devstack` gives it no env file of its own."""

from __future__ import annotations

import os
import subprocess

from config import devstack


def test_the_environment_wins_over_the_env_file_in_the_procfiles_processes(tmp_path):
    (tmp_path / ".env").write_text("PROBE=from-the-file\nONLY_IN_FILE=not-for-honcho\n")
    procfile = tmp_path / "Procfile"
    procfile.write_text('probe: echo "PROBE=$PROBE ONLY_IN_FILE=${ONLY_IN_FILE:-unset}"\n')
    environment = {**os.environ, "PROBE": "from-the-environment"}
    environment.pop("ONLY_IN_FILE", None)

    run = subprocess.run(
        devstack.honcho_command(procfile, tmp_path, "5000"),
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # devstack has loaded the file into the environment before honcho starts (env_file.load(),
    # the environment winning); honcho adding it again is what let the file win.
    assert "PROBE=from-the-environment ONLY_IN_FILE=unset" in run.stdout, run.stdout + run.stderr
