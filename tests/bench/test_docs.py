"""`python -m bench report`: figures of benchmarks without results here are kept as recorded."""

from __future__ import annotations

from bench import docs


def test_a_report_keeps_the_recorded_sections_of_benchmarks_it_has_no_results_for(tmp_path):
    previous = docs.generated(results_dir=tmp_path).replace(
        "### 4. Sweeper\n\nNot run yet.", "### 4. Sweeper\n\nRun earlier: 6.34 s, 3 queries per batch."
    )

    block = docs.generated(results_dir=tmp_path, previous=previous)

    assert "### 4. Sweeper\n\nRun earlier: 6.34 s, 3 queries per batch.\n" in block
    assert "### 5. Timeline\n\nNot run yet.\n" in block  # never recorded
    assert block.startswith(docs.BEGIN) and block.endswith(docs.END)
    assert docs.generated(results_dir=tmp_path, previous=block) == block  # stable when re-run


def test_the_independence_section_says_what_waking_an_idle_process_costs():
    line = docs.wake_line(
        {
            "before": {"after_0ms": 96.5, "after_10ms": 140.2, "after_100ms": 954.7},
            "after": {"after_0ms": 90.0, "after_100ms": 1100.0},
        }
    )

    before = "before the run: 96 µs back to back, 140 µs after 10 ms asleep, 955 µs after 100 ms asleep;"
    assert before in line
    assert "after the run: 90 µs back to back, 1,100 µs after 100 ms asleep." in line
