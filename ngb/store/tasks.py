"""Scheduled tasks and their runs: the task rows, the scheduler's exactly-once claim of due slots
(one transaction for every due task), and a run's life (queued -> running -> ok | error |
skipped, or interrupted when its agent is gone)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from ..records import Task, TaskRun, TaskStatus, converter, format_time, parse_time, utcnow
from .core import StoreCore
from .rows import task_from_row, task_run_from_row, task_to_row

log = logging.getLogger("ngb.store")


class TasksMixin(StoreCore):
    """The Store's tasks and task runs."""

    async def add_task(self, task: Task) -> None:
        def q(c: sqlite3.Connection) -> None:
            row = task_to_row(task)
            c.execute(
                f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )

        await self.run(q)

    async def task(self, task_id: str) -> Task | None:
        def q(c: sqlite3.Connection) -> Task | None:
            row = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return task_from_row(dict(row)) if row else None

        return await self.run(q)

    async def tasks(self, folder: str | None = None) -> list[Task]:
        if folder is None:
            return await self.select(task_from_row, "SELECT * FROM tasks ORDER BY created_at")
        return await self.select(task_from_row, "SELECT * FROM tasks WHERE folder = ? ORDER BY created_at", (folder,))

    async def task_runs(self, task_id: str, limit: int = 50) -> list[TaskRun]:
        return await self.select(
            task_run_from_row, "SELECT * FROM task_runs WHERE task_id = ? ORDER BY id DESC LIMIT ?", (task_id, limit)
        )

    async def patch_task(self, task_id: str, changes: dict[str, Any]) -> Task | None:
        """Change some fields of a task (only those), in one transaction. Returns the new task."""

        def q(c: sqlite3.Connection) -> Task | None:
            if changes:
                row = {k: getattr(v, "value", v) for k, v in converter.unstructure(changes).items()}
                sets = ", ".join(f"{k} = ?" for k in row)
                c.execute(f"UPDATE tasks SET {sets} WHERE id = ?", (*row.values(), task_id))
            got = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return task_from_row(dict(got)) if got else None

        return await self.run(q)

    async def task_run_rows(self, task_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The run log of a task, newest first, as rows (with scheduled_for and result)."""
        return await self.run(
            lambda c: [
                dict(r)
                for r in c.execute(
                    "SELECT * FROM task_runs WHERE task_id = ? ORDER BY id DESC LIMIT ?", (task_id, limit)
                ).fetchall()
            ]
        )

    # -- the scheduler's side -----------------------------------------------------------------
    async def next_due(self) -> datetime | None:
        """The earliest next_run of an active task (an index lookup, cheap with 10k tasks)."""

        def q(c: sqlite3.Connection) -> datetime | None:
            row = c.execute(
                "SELECT MIN(next_run) FROM tasks WHERE status = 'active' AND next_run IS NOT NULL"
            ).fetchone()
            return parse_time(row[0]) if row and row[0] else None

        return await self.run(q)

    async def claim_due(
        self,
        now: datetime,
        next_after: Callable[[Task, datetime, datetime], datetime | None],
        limit: int = 500,
    ) -> list[tuple[Task, int, datetime]]:
        """Claim every task due at `now`, in ONE transaction: for each, insert its TaskRun row for
        the slot (next_run) and move next_run past now (or complete a once task). Returns the
        (task, run id, slot) triples to hand to the actors. A task whose previous run is still queued or
        running gets a 'skipped' run for this slot instead (runs of one task never overlap). The
        unique (task_id, scheduled_for) index makes a second claim of a slot impossible."""

        def q(c: sqlite3.Connection) -> list[tuple[Task, int, datetime]]:
            at = format_time(now)
            rows = c.execute(
                "SELECT * FROM tasks WHERE status = 'active' AND next_run IS NOT NULL AND next_run <= ?"
                " ORDER BY next_run LIMIT ?",
                (at, limit),
            ).fetchall()
            claimed: list[tuple[Task, int, datetime]] = []
            for row in rows:
                task = task_from_row(dict(row))
                slot = task.next_run
                assert slot is not None
                try:
                    nxt = next_after(task, slot, now)
                except Exception as exc:  # noqa: BLE001 - a broken schedule pauses its task only
                    log.error("scheduler: task %s has a broken schedule, pausing it: %s", task.id, exc)
                    c.execute(
                        "UPDATE tasks SET status = 'paused', last_result = ? WHERE id = ?",
                        (f"paused: broken schedule: {exc}"[:500], task.id),
                    )
                    continue
                status = TaskStatus.COMPLETED if nxt is None else TaskStatus.ACTIVE
                busy = c.execute(
                    "SELECT 1 FROM task_runs WHERE task_id = ? AND outcome IN ('queued', 'running') LIMIT 1",
                    (task.id,),
                ).fetchone()
                if busy:
                    cur = c.execute(
                        "INSERT OR IGNORE INTO task_runs (task_id, scheduled_for, started_at, ended_at, outcome, error)"
                        " VALUES (?, ?, ?, ?, 'skipped', 'the previous run had not finished')",
                        (task.id, format_time(slot), at, at),
                    )
                else:
                    cur = c.execute(
                        "INSERT OR IGNORE INTO task_runs (task_id, scheduled_for, started_at, outcome)"
                        " VALUES (?, ?, ?, 'queued')",
                        (task.id, format_time(slot), at),
                    )
                c.execute(
                    "UPDATE tasks SET next_run = ?, status = ?, last_run = ? WHERE id = ?",
                    (format_time(nxt) if nxt else None, status.value, at, task.id),
                )
                if cur.rowcount and not busy:
                    task = attrs.evolve(task, next_run=nxt, status=status, last_run=now)
                    claimed.append((task, int(cur.lastrowid or 0), slot))
                elif not cur.rowcount:
                    log.warning("scheduler: task %s slot %s was already claimed", task.id, format_time(slot))
            return claimed

        return await self.run(q)

    async def queued_runs(self, folder: str) -> list[tuple[int, Task]]:
        """Runs claimed for this group's tasks and not yet handed to the agent, oldest first."""

        def q(c: sqlite3.Connection) -> list[tuple[int, Task]]:
            rows = c.execute(
                "SELECT r.id AS run_id, t.* FROM task_runs r JOIN tasks t ON t.id = r.task_id"
                " WHERE r.outcome = 'queued' AND t.folder = ? ORDER BY r.id",
                (folder,),
            ).fetchall()
            out = []
            for r in rows:
                data = dict(r)
                run_id = data.pop("run_id")
                out.append((int(run_id), task_from_row(data)))
            return out

        return await self.run(q)

    async def start_run(self, run_id: int) -> bool:
        """queued -> running, once: False when the run was already taken or ended."""

        def q(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE task_runs SET outcome = 'running', started_at = ? WHERE id = ? AND outcome = 'queued'",
                (format_time(utcnow()), run_id),
            )
            return bool(cur.rowcount)

        return await self.run(q)

    async def finish_run(
        self,
        run_id: int,
        outcome: str,
        *,
        error: str | None = None,
        tokens: int | None = None,
        result: str | None = None,
    ) -> None:
        """End a run (ok | error | skipped) and note the outcome on its task."""

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE task_runs SET outcome = ?, error = ?, tokens = ?, result = ?, ended_at = ?"
                " WHERE id = ? AND outcome IN ('queued', 'running')",
                (
                    outcome,
                    (error or None) and error[:2000],
                    tokens,
                    (result or None) and result[:2000],
                    format_time(utcnow()),
                    run_id,
                ),
            )
            summary = outcome if not (error or result) else f"{outcome}: {error or result}"
            c.execute(
                "UPDATE tasks SET last_result = ? WHERE id = (SELECT task_id FROM task_runs WHERE id = ?)",
                (summary[:500], run_id),
            )

        await self.run(q)

    async def interrupt_runs(
        self, folder: str | None = None, notice: tuple[str, Callable[[list[str]], str]] | None = None
    ) -> list[str]:
        """Runs handed to an agent that is gone (the daemon or the actor restarted) are over: they
        are recorded as failed, never run again. Queued runs (never handed over) stay queued.
        Returns the interrupted runs' task ids. ``notice`` (chat, text for those ids) queues a
        message to that chat in the same transaction, so the group hears of it exactly once."""

        def q(c: sqlite3.Connection) -> list[str]:
            where = " WHERE outcome = 'running'"
            args: tuple[Any, ...] = ()
            if folder is not None:
                where += " AND task_id IN (SELECT id FROM tasks WHERE folder = ?)"
                args = (folder,)
            ids = [
                str(r[0]) for r in c.execute("SELECT task_id FROM task_runs" + where + " ORDER BY id", args)
            ]
            if not ids:
                return []
            c.execute(
                "UPDATE task_runs SET outcome = 'error', ended_at = ?,"
                " error = 'interrupted: the daemon or the agent stopped before the run finished'" + where,
                (format_time(utcnow()), *args),
            )
            if notice is not None and folder is not None:
                c.execute(
                    "INSERT INTO outbox (folder, chat, text, created_at) VALUES (?, ?, ?, ?)",
                    (folder, notice[0], notice[1](ids), format_time(utcnow())),
                )
            return ids

        return await self.run(q)
