"""Moved to ngb/tasks/scheduler.py (kept for bench/bench_scheduler.py)."""

from .tasks.scheduler import Scheduler, task_next_after  # noqa: F401
