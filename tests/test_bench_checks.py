"""The benchmarks' checks can fail (bench/goals.py): a missed goal and a figure that could not be
measured both make a benchmark exit 1, and a dead process has no memory figure (it used to read
as 0 MB, which passed "<= 100 MB")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.goals import FACTOR_VAR, MeasurementFailed, Report, rss_bytes

ROOT = Path(__file__).resolve().parent.parent


def test_rss_of_a_dead_process_fails_the_measurement() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert rss_bytes(proc) > 0
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
        with pytest.raises(MeasurementFailed):
            rss_bytes(proc.pid)  # its /proc entry is still there, without memory
        with pytest.raises(MeasurementFailed):
            rss_bytes(proc)
    finally:
        proc.kill()
        proc.wait()


def test_a_missed_goal_and_an_unmeasured_figure_fail(capsys: pytest.CaptureFixture[str]) -> None:
    held = Report()
    held.figure("ingest", 6000, "msg/s", 5000, higher_is_better=True)
    held.figure("idle RSS", 64, "MB", 100)
    held.figure("information only", 123, "ms")
    assert held.exit_code() == 0

    missed = Report()
    missed.figure("idle RSS", 101, "MB", 100)
    assert missed.exit_code() == 1
    assert "MISS" in capsys.readouterr().out

    failed = Report()
    with failed.measuring("idle RSS"):
        raise MeasurementFailed("process 42 exited")
    failed.figure("ready", float("nan"), "ms", 1000)  # a wait that never ended
    assert failed.exit_code() == 1
    out = capsys.readouterr().out
    assert out.count("FAIL (not measured") == 2 and "process 42 exited" in out
    assert " 0.0 MB" not in out and "nan" not in out


def test_the_short_sets_margin(capsys: pytest.CaptureFixture[str]) -> None:
    """Past the goal by up to the margin passes (and says so); further fails."""
    within = Report(margin=0.25)
    within.figure("ready", 1200, "ms", 1000)
    within.figure("ingest", 3800, "msg/s", 5000, higher_is_better=True)
    assert within.exit_code() == 0
    assert capsys.readouterr().out.count("past the goal, within 25%") == 2

    past = Report(margin=0.25)
    past.figure("ingest", 3700, "msg/s", 5000, higher_is_better=True)
    assert past.exit_code() == 1


def test_goal_factor_makes_every_goal_harder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FACTOR_VAR, "1000")
    report = Report()
    report.figure("idle RSS", 64, "MB", 100)
    report.figure("ingest", 6000, "msg/s", 5000, higher_is_better=True)
    report.check("answered once", True)
    assert [f.verdict for f in report.figures] == ["MISS", "MISS", "MISS"]
    assert report.exit_code() == 1


@pytest.mark.slow
@pytest.mark.parametrize("factor, status", [("1000", 1), ("0.001", 0)])
def test_a_benchmark_exits_1_on_a_missed_goal(factor: str, status: int) -> None:
    """bench_ingest and bench_scheduler, with every goal 1000x harder (1) and easier (0)."""
    env = {**os.environ, FACTOR_VAR: factor}
    for args in (["bench.bench_ingest", "--messages", "800"],
                 ["bench.bench_scheduler", "--tasks", "100", "--spread", "0.5", "--idle", "0.5"]):
        run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == status, run.stdout + run.stderr
        assert ("MISS" in run.stdout) == (status == 1)
