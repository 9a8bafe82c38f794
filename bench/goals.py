"""The benchmarks' one convention: every figure with a goal is a `Figure`, printed next to its goal
with a verdict, and a benchmark's exit status says whether all of them held.

- OK: the figure meets its goal (with a margin, as the short set has: OK also within the margin,
  and it says so);
- MISS: the figure was measured and is past its goal (past goal + margin where there is one);
- FAIL: the figure could not be measured (a process died, an answer was not 200, a wait timed
  out); it is never printed as a number (no "0 MB" for a dead process).

`Report.exit_code()` prints a summary line and returns 1 when any figure is MISS or FAIL, else 0;
each benchmark returns it from `main`, `python -m bench` exits 1 when any benchmark did. An
exception that ends a benchmark is a failed measurement too (Python's exit status 1).

NGB_BENCH_GOAL_FACTOR=N makes every goal N times harder (a lower-is-better goal divided by N, a
higher-is-better one multiplied; a yes/no goal cannot be met then): `NGB_BENCH_GOAL_FACTOR=1000
python -m bench` must exit 1, and print MISS for every figure with a goal: a check of the checks.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

FACTOR_VAR = "NGB_BENCH_GOAL_FACTOR"


class MeasurementFailed(Exception):
    """A figure could not be measured; the message says why."""


def goal_factor() -> float:
    raw = os.environ.get(FACTOR_VAR, "1")
    try:
        factor = float(raw)
    except ValueError:
        raise SystemExit(f"{FACTOR_VAR}={raw!r}: not a number") from None
    if not factor > 0:
        raise SystemExit(f"{FACTOR_VAR}={raw!r}: must be > 0")
    return factor


@attrs.define
class Figure:
    name: str
    value: float | None  # None: not measured (see `reason`)
    unit: str = ""
    goal: float | None = None  # None: information only, never fails
    higher_is_better: bool = False
    margin: float = 0.0  # past the goal by at most this share still passes (the short set: 0.25)
    reason: str = ""  # why it was not measured
    fmt: str = ".1f"

    @property
    def target(self) -> float | None:
        """The goal this run checks (NGB_BENCH_GOAL_FACTOR applied)."""
        if self.goal is None:
            return None
        factor = goal_factor()
        return self.goal * factor if self.higher_is_better else self.goal / factor

    @property
    def limit(self) -> float | None:
        target = self.target
        if target is None:
            return None
        return target * (1 - self.margin) if self.higher_is_better else target * (1 + self.margin)

    def _meets(self, bound: float) -> bool:
        assert self.value is not None
        return self.value >= bound if self.higher_is_better else self.value <= bound

    @property
    def verdict(self) -> str:
        if self.value is None or math.isnan(self.value):
            return f"FAIL (not measured: {self.reason or 'no value'})"
        target, limit = self.target, self.limit
        if target is None or limit is None:
            return ""
        if self._meets(target):
            return "OK"
        if self.margin and self._meets(limit):
            return f"OK (past the goal, within {self.margin:.0%})"
        return "MISS"

    @property
    def failed(self) -> bool:
        return self.verdict.startswith(("MISS", "FAIL"))

    def line(self) -> str:
        value = "-" if self.value is None else f"{self.value:{self.fmt}} {self.unit}".rstrip()
        goal = ""
        if self.target is not None:
            goal = f"goal {'>=' if self.higher_is_better else '<='} {self.target:g} {self.unit}".rstrip()
            if self.margin:
                goal += f" (fail {'<' if self.higher_is_better else '>'} {self.limit:g})"
        return f"{self.name:<50} {value:>16}   {goal:<28} {self.verdict}".rstrip()


@attrs.define
class Report:
    """The figures of one benchmark run, printed as they come."""

    margin: float = 0.0
    figures: list[Figure] = attrs.field(factory=list)
    started: float = attrs.field(factory=time.perf_counter)

    def __attrs_post_init__(self) -> None:
        factor = goal_factor()
        if factor != 1:
            print(f"({FACTOR_VAR}={factor:g}: every goal {factor:g}x harder; a self-test of the checks)", flush=True)

    def figure(self, name: str, value: float | None, unit: str = "", goal: float | None = None, *,
               higher_is_better: bool = False, fmt: str = ".1f", reason: str = "") -> Figure:
        if value is not None and math.isnan(value):
            value, reason = None, reason or "no value"
        f = Figure(name, value, unit, goal, higher_is_better, self.margin, reason, fmt)
        self.figures.append(f)
        print(f.line(), flush=True)
        return f

    def check(self, name: str, held: bool, shown: str = "") -> Figure:
        """A yes/no goal (e.g. "answered exactly once"): OK or MISS."""
        f = Figure(name, 1.0 if held else 0.0, "", 1.0, True, 0.0, "", ".0f")
        self.figures.append(f)
        print(f"{name:<50} {shown or ('yes' if held else 'no'):>16}   {'goal yes':<28} {f.verdict}", flush=True)
        return f

    def fail(self, name: str, reason: str) -> Figure:
        """A figure that could not be measured: FAIL, whatever its goal."""
        return self.figure(name, None, reason=reason)

    def info(self, name: str, value: str) -> None:
        """Information only: printed, never fails."""
        print(f"{name:<50} {value:>16}", flush=True)

    @contextlib.contextmanager
    def measuring(self, name: str) -> Iterator[None]:
        """Record a FAIL for `name` when the block raises (and go on with the next figure)."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - any error here is a failed measurement, reported
            self.fail(name, describe(exc))

    def exit_code(self) -> int:
        missed = [f.name for f in self.figures if f.verdict.startswith("MISS")]
        failed = [f.name for f in self.figures if f.verdict.startswith("FAIL")]
        goals = [f for f in self.figures if f.goal is not None or f.failed]
        held = sum(1 for f in goals if not f.failed)
        text = f"\n{held}/{len(goals)} goals held in {time.perf_counter() - self.started:.0f} s"
        if missed:
            text += f"; MISSED: {', '.join(missed)}"
        if failed:
            text += f"; FAILED (not measured): {', '.join(failed)}"
        print(text, flush=True)
        return 1 if missed or failed else 0


def describe(exc: BaseException) -> str:
    """One line for an error, the leaves of an exception group (trio's nurseries wrap them) named."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def run(main: Callable[[], int]) -> int:
    """A benchmark's `main` as an exit status: an exception that ends it is a failed measurement,
    printed as one FAIL line (after its traceback) and exit status 1."""
    try:
        return main()
    except Exception as exc:  # noqa: BLE001 - reported, and the status says it
        traceback.print_exc()
        print(f"\nFAIL (not measured): the benchmark stopped: {describe(exc)}", flush=True)
        return 1


def expect_status(response: Any, status: int = 200) -> Any:
    """The (httpx) response, when its status is `status`; else MeasurementFailed (a figure taken over
    answers that were errors means nothing)."""
    if response.status_code != status:
        raise MeasurementFailed(f"{response.request.method} {response.request.url.path} answered "
                                f"{response.status_code} (expected {status}): {response.text[:200]}")
    return response


def rss_bytes(proc: subprocess.Popen | int) -> int:
    """Resident memory of a live process. Raises MeasurementFailed when it has exited (a dead child
    is a zombie until reaped: its /proc entry has no VmRSS) or does not exist."""
    pid = proc if isinstance(proc, int) else proc.pid
    if not isinstance(proc, int) and proc.poll() is not None:
        raise MeasurementFailed(f"process {pid} exited (status {proc.returncode}) before its memory was read")
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        raise MeasurementFailed(f"no process {pid}") from None
    for row in status.splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) * 1024
    raise MeasurementFailed(f"process {pid} has exited (no resident memory)")


def wait_healthz(proc: subprocess.Popen, port: int, started: float, timeout: float = 30.0) -> float:
    """Seconds from `started` (a perf_counter) until `ngb run` (proc) answers /healthz 200. Raises
    MeasurementFailed when the process exits first or it does not answer within `timeout`."""
    import httpx

    deadline = time.time() + timeout
    last = "no answer"
    while time.time() < deadline:
        if proc.poll() is not None:
            raise MeasurementFailed(f"`ngb run` exited with status {proc.returncode} before /healthz answered")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if r.status_code == 200:
                return time.perf_counter() - started
            last = f"/healthz answered {r.status_code}"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}"
        time.sleep(0.01)
    raise MeasurementFailed(f"/healthz not 200 within {timeout:g} s ({last})")
