"""`python -m bench [NAME ...] [--quick]`: run benchmarks, each in its own process.

Without a name every benchmark runs, one after the other, and `docs/benchmarks.md` gets the
figures (between its generated-section markers). `python -m bench report` only rewrites that
section from `bench/results/*.json`.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import subprocess
import sys
from types import FrameType

from bench import common

BENCHMARKS = common.BENCHMARKS


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C: every `with BenchEnv` stops its processes and drops its
    # database on the way out.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"{', '.join(BENCHMARKS)} or report (default: all, then report)",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke configuration")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - {*BENCHMARKS, "report"})
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (choose from {', '.join(BENCHMARKS)}, report)")
    names = list(args.names) or [*BENCHMARKS, "report"]
    if names == ["report"]:
        from bench import docs

        docs.write()
        return 0
    if len(names) == 1:
        module = importlib.import_module(f"bench.{names[0]}")
        module.run(quick=args.quick)
        return 0
    failed = []
    for name in names:
        if name == "report":
            continue
        command = [common.PYTHON, "-m", "bench", name, *(["--quick"] if args.quick else [])]
        print(f"\n=== {' '.join(command[1:])}", flush=True)
        child = subprocess.Popen(command, cwd=common.ROOT)
        try:
            if child.wait():
                failed.append(name)
        except BaseException:
            child.terminate()  # it cleans up after itself (see _exit_on_signal)
            child.wait(120)
            raise
    if "report" in names:
        from bench import docs

        docs.write()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
