"""The scheduler and task turns: claims (exactly once), sleeping without polling (MockClock),
catch-up, pause/resume, group and isolated runs, pre-scripts, restarts, cross-group refusal."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from ngb.protocol import Prescript, PrescriptResult
from ngb.records import Group, ScheduleKind, Task, TaskStatus, utcnow
from ngb.sandbox.tool_socket import serve_requests
from ngb.sandbox.tools import ToolContext, ToolService
from ngb.store import Store
from ngb.tasks.runs import interpret_prescript
from ngb.tasks.scheduler import Scheduler, task_next_after
from ngb.tasks.service import Caller, TaskError, TaskService
from tests.fakes.agent import FakeBehaviour, wake_json

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_task(task_id: str, next_run: datetime | None, *, kind: str = "interval", value: str = "60", **kw: Any) -> Task:
    return Task(
        id=task_id,
        folder=kw.pop("folder", "main"),
        chat=kw.pop("chat", "local:main"),
        prompt=kw.pop("prompt", f"do {task_id}"),
        schedule_kind=ScheduleKind(kind),
        schedule_value=value,
        next_run=next_run,
        **kw,
    )


@pytest.fixture
async def store(tmp_path: Path):
    s = Store(tmp_path / "ngb.db")
    await s.open()
    yield s
    await s.close()


# -- claims ---------------------------------------------------------------------------------
async def test_claim_records_the_run_and_moves_next_run_in_one_go(store: Store) -> None:
    await store.add_task(make_task("a", T0))
    await store.add_task(make_task("b", T0 + timedelta(hours=1)))
    claimed = await store.claim_due(T0 + timedelta(seconds=0.4), task_next_after)
    assert [(t.id, slot) for t, _run, slot in claimed] == [("a", T0)]
    assert (await store.task("a")).next_run == T0 + timedelta(seconds=60)  # anchored, not now + 60
    rows = await store.task_run_rows("a")
    assert len(rows) == 1 and rows[0]["outcome"] == "queued"
    # The same moment again: nothing is due any more; no second run of the slot.
    assert await store.claim_due(T0 + timedelta(seconds=0.4), task_next_after) == []
    assert await store.next_due() == T0 + timedelta(seconds=60)


async def test_a_slot_cannot_be_claimed_twice_even_if_next_run_is_written_back(store: Store) -> None:
    await store.add_task(make_task("a", T0, kind="cron", value="0 * * * *"))
    assert len(await store.claim_due(T0, task_next_after)) == 1
    await store.patch_task("a", {"next_run": T0})  # a stale writer puts the old slot back
    again = await store.claim_due(T0 + timedelta(seconds=1), task_next_after)
    assert again == []
    assert len(await store.task_run_rows("a")) == 1
    assert (await store.task("a")).next_run == T0 + timedelta(hours=1)


async def test_runs_of_one_task_never_overlap(store: Store) -> None:
    await store.add_task(make_task("a", T0))
    (_t, run_id, _slot), = await store.claim_due(T0, task_next_after)
    assert await store.start_run(run_id)
    late = await store.claim_due(T0 + timedelta(seconds=61), task_next_after)
    assert late == []
    rows = await store.task_run_rows("a")
    assert [r["outcome"] for r in rows] == ["skipped", "running"]
    assert "previous run" in rows[0]["error"]


async def test_once_completes_and_catch_up_runs_once(store: Store) -> None:
    await store.add_task(make_task("once", T0, kind="once", value=T0.isoformat()))
    await store.add_task(make_task("every", T0, kind="interval", value="30m"))
    # The daemon was down for 5 hours.
    now = T0 + timedelta(hours=5, minutes=7)
    claimed = await store.claim_due(now, task_next_after)
    assert sorted(t.id for t, _r, _s in claimed) == ["every", "once"]
    once = await store.task("once")
    assert once.status is TaskStatus.COMPLETED and once.next_run is None
    assert (await store.task("every")).next_run == T0 + timedelta(hours=5, minutes=30)
    assert await store.claim_due(now + timedelta(minutes=1), task_next_after) == []
    assert len(await store.task_run_rows("every")) == 1


class NoGroups:
    def get(self, chat: str) -> None:
        return None

    def by_folder(self, folder: str) -> None:
        return None


async def test_pause_and_resume(store: Store) -> None:
    await store.add_task(make_task("a", T0))
    tasks, operator = TaskService(store, NoGroups()), Caller.operator("cli")
    await tasks.set_status(operator, "a", TaskStatus.PAUSED)
    assert await store.claim_due(T0 + timedelta(hours=1), task_next_after) == []
    assert await store.next_due() is None
    resumed = await tasks.set_status(operator, "a", TaskStatus.ACTIVE)
    assert resumed.status is TaskStatus.ACTIVE and resumed.next_run > utcnow() - timedelta(seconds=1)
    await tasks.set_status(operator, "a", TaskStatus.CANCELLED)
    with pytest.raises(TaskError, match="cancelled") as refused:
        await tasks.set_status(operator, "a", TaskStatus.ACTIVE)
    assert refused.value.status == 409


# -- the scheduler loop on a mock clock ------------------------------------------------------
async def test_scheduler_sleeps_until_due_wakes_on_poke_and_fires_on_the_grid(store: Store, mock_clock) -> None:
    mock_clock.autojump_threshold = 0.01  # jump only when every task sleeps (store calls take ms)
    now = lambda: T0 + timedelta(seconds=trio.current_time())  # noqa: E731 - wall clock = mock clock
    woken: list[str] = []
    fired: list[tuple[str, float, float]] = []
    async with trio.open_nursery() as nursery:

        def claimed(task: Task, run_id: int, late: float) -> None:
            fired.append((task.id, trio.current_time(), late))
            nursery.start_soon(store.finish_run, run_id, "ok")  # the actor's part, done at once

        sched = Scheduler(store, lambda folder: woken.append(folder) or True, now=now, on_claimed=claimed)
        await store.add_task(make_task("every", T0 + timedelta(seconds=600), value="600"))
        await nursery.start(sched.run)
        await trio.sleep(3600 + 1)
        # 6 runs in the hour, each at its slot, on the grid.
        assert [round(t) for _id, t, _l in fired] == [600, 1200, 1800, 2400, 3000, 3600]
        assert max(late for *_x, late in fired) < 0.5
        # No polling: a wake-up per run plus at most one per max_sleep (60 s) of wall-clock resync.
        assert sched.wakeups <= 6 + 61
        # A task added now, due in 5 s: poke() makes the sleeping scheduler see it at once.
        await store.add_task(make_task("soon", now() + timedelta(seconds=5), kind="once", value="x"))
        sched.poke()
        await trio.sleep(5.5)
        assert fired[-1][0] == "soon" and fired[-1][2] < 0.5
        nursery.cancel_scope.cancel()
    assert woken.count("main") == 7


async def test_scheduler_idle_with_no_tasks_wakes_once_a_minute(store: Store, mock_clock) -> None:
    mock_clock.autojump_threshold = 0.01
    sched = Scheduler(store, lambda folder: True, now=lambda: T0 + timedelta(seconds=trio.current_time()))
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(600)
        assert sched.wakeups <= 11
        nursery.cancel_scope.cancel()


async def test_runs_of_an_unregistered_group_fail_with_the_reason(store: Store) -> None:
    await store.add_task(make_task("orphan", T0, folder="gone"))
    sched = Scheduler(store, lambda folder: False, now=lambda: T0)
    assert await sched.tick() == 1
    rows = await store.task_run_rows("orphan")
    assert rows[0]["outcome"] == "error" and "not registered" in rows[0]["error"]


# -- task turns through the daemon (fake agent) ----------------------------------------------
async def add_due(running: Any, task: Task) -> None:
    await running.daemon.store.add_task(task)
    running.daemon.scheduler.poke()


async def wait_runs(store: Store, task_id: str, n: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
    with trio.fail_after(timeout):
        while True:
            rows = await store.task_run_rows(task_id)
            done = [r for r in rows if r["outcome"] not in ("queued", "running")]
            if len(done) >= n:
                return rows
            await trio.sleep(0.02)


async def test_group_task_runs_in_the_live_session_and_replies_without_moving_the_cursor(run_daemon) -> None:
    r = await run_daemon(NGB_IDLE_TIMEOUT="5")
    await r.post("main", "hello")
    await r.wait_bot_replies("main", 1)
    store = r.daemon.store
    cursor = await store.cursor("main")
    await add_due(r, make_task("t1", utcnow(), kind="once", value="x", prompt="remind me of the stand-up"))
    bot = await r.wait_bot_replies("main", 2)
    assert "remind me of the stand-up" in bot[1]["text"]
    rows = await wait_runs(store, "t1")
    assert rows[0]["outcome"] == "ok" and rows[0]["scheduled_for"]
    assert await store.cursor("main") == cursor
    # Same container, same session: the task went into the live conversation.
    assert r.launcher.started == 1
    assert [p for f, n, p in r.launcher.prompts if "scheduled_task" in p][0].count("stand-up") == 1
    assert (await store.task("t1")).status is TaskStatus.COMPLETED
    # The next chat message is answered normally after the task's batch.
    await r.post("main", "and now?")
    bot = await r.wait_bot_replies("main", 3)
    assert "and now?" in bot[2]["text"]


async def test_isolated_task_gets_a_fresh_session_that_does_not_replace_the_groups(run_daemon) -> None:
    r = await run_daemon()
    await r.post("main", "hello")
    await r.wait_bot_replies("main", 1)
    store = r.daemon.store
    with trio.fail_after(5):
        while r.launcher.live:
            await trio.sleep(0.02)
    group_session = await store.session_id("main")
    assert group_session
    await add_due(r, make_task("iso", utcnow(), kind="once", value="x", context_mode="isolated", prompt="summary"))
    bot = await r.wait_bot_replies("main", 2)
    assert "summary" in bot[1]["text"]
    assert (await wait_runs(store, "iso"))[0]["outcome"] == "ok"
    iso_start = r.launcher.starts[-1]
    assert iso_start["session_id"] is None and iso_start["isolated"] is True
    assert await store.session_id("main") == group_session
    # The isolated prompt carried no chat history.
    iso_prompt = [p for f, n, p in r.launcher.prompts if "summary" in p][0]
    assert "hello" not in iso_prompt


@pytest.mark.parametrize(
    ("script", "outcome", "reply", "reason"),
    [
        (wake_json(True, {"failed": ["build #12"]}), "ok", "build #12", None),
        (wake_json(False), "skipped", None, None),
        ("echo oops >&2; exit 3", "error", None, "exited with status 3: oops"),
        ("echo not json", "error", None, "must print JSON"),
        ("sleep 5", "error", None, "timed out"),
    ],
)
async def test_pre_script_decides_whether_the_agent_wakes(run_daemon, script, outcome, reply, reason) -> None:
    r = await run_daemon(NGB_PRESCRIPT_TIMEOUT="0.5")
    r.daemon.supervisor.actors["main"].actor.settings.prescript_timeout = 0.5
    store = r.daemon.store
    await add_due(r, make_task("check", utcnow(), kind="once", value="x", prompt="tell me if it broke", pre_script=script))
    rows = await wait_runs(store, "check")
    assert rows[0]["outcome"] == outcome, rows[0]
    assert r.launcher.prescripts and r.launcher.prescripts[0]["command"] == script
    task_prompts = [p for f, n, p in r.launcher.prompts if "tell me if it broke" in p]
    if reply:
        bot = await r.wait_bot_replies("main", 1)
        assert reply in task_prompts[0] and "tell me if it broke" in bot[0]["text"]
    else:
        assert task_prompts == []  # no model call
        await trio.sleep(0.2)
        assert not [m for m in await r.history("main") if m["from_bot"]]
    if reason:
        assert reason in rows[0]["error"]


async def test_restart_interrupted_run_is_not_repeated_and_queued_run_runs_once(run_daemon, tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store(state / "ngb.db")
    await store.open()
    now = utcnow()
    await store.add_task(make_task("was-running", now, kind="interval", value="1d", prompt="running one"))
    await store.add_task(make_task("was-queued", now, kind="interval", value="1d", prompt="queued one"))
    claimed = await store.claim_due(now, task_next_after)
    by_id = {t.id: run for t, run, _s in claimed}
    assert await store.start_run(by_id["was-running"])  # handed to an agent, then kill -9
    await store.close()

    r = await run_daemon(state=tmp_path)
    bot = await r.wait_bot_replies("main", 2)
    await trio.sleep(0.5)
    bot = [m["text"] for m in await r.history("main") if m["from_bot"]]
    # the interrupted run is told once (not repeated: it may have partly run); the queued one runs
    assert len(bot) == 2 and sum("queued one" in t for t in bot) == 1
    (notice,) = [t for t in bot if t.startswith("⚠️")]
    assert "A scheduled task run was interrupted by a restart (was-running)" in notice
    assert not any("running one" in p for _f, _n, p in r.launcher.prompts)
    running = await r.daemon.store.task_run_rows("was-running")
    queued = await r.daemon.store.task_run_rows("was-queued")
    assert [x["outcome"] for x in running] == ["error"] and "interrupted" in running[0]["error"]
    assert [x["outcome"] for x in queued] == ["ok"]


async def test_failed_task_turn_is_recorded_and_told(run_daemon) -> None:
    r = await run_daemon(FakeBehaviour(crash_on=lambda p: "explode" in p))
    await add_due(r, make_task("boom", utcnow(), kind="once", value="x", prompt="explode"))
    rows = await wait_runs(r.daemon.store, "boom")
    assert rows[0]["outcome"] == "error" and "did not finish" in rows[0]["error"]
    assert len(await r.daemon.store.task_run_rows("boom")) == 1  # not retried


# -- the tools over a real requests socket: per-group authorization --------------------------
async def test_cross_group_task_calls_are_refused_over_the_socket(run_daemon, tmp_path: Path) -> None:
    r = await run_daemon()
    registry = r.daemon.registry
    alpha = await registry.add(Group(chat="local:alpha", folder="alpha", requires_trigger=False))
    await registry.add(Group(chat="local:beta", folder="beta", requires_trigger=False))
    await r.daemon.store.add_task(make_task("beta-task", utcnow() + timedelta(days=1), folder="beta", chat="local:beta"))
    service = ToolService(ToolContext(r.daemon.store, registry, lambda: None, "@Andy"))
    path = tmp_path / "requests.sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(4)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_requests, trio.SocketListener(sock), lambda: alpha, service)
        stream = await trio.open_unix_socket(str(path))
        buf = b""

        async def call(i: int, tool: str, args: dict[str, Any]) -> dict[str, Any]:
            nonlocal buf
            await stream.send_all(json.dumps({"id": f"r{i}", "tool": tool, "args": args}).encode() + b"\n")
            while b"\n" not in buf:
                buf += await stream.receive_some()
            line, buf = buf.split(b"\n", 1)
            return json.loads(line)

        for i, tool in enumerate(("pause_task", "resume_task", "cancel_task", "update_task")):
            answer = await call(i, tool, {"task_id": "beta-task", "prompt": "hijack"})
            assert answer == {"id": f"r{i}", "ok": False, "error": "no task 'beta-task' in this group"}
        answer = await call(10, "schedule_task", {"prompt": "x", "schedule_type": "once",
                                                  "schedule_value": "2099-01-01T00:00", "chat": "local:beta"})
        assert answer["ok"] is False and "only the main group" in answer["error"]
        answer = await call(11, "list_tasks", {})
        assert answer["ok"] and answer["result"]["tasks"] == []
        for args, reason in [
            ({"schedule_type": "cron", "schedule_value": "61 * * * *"}, "invalid cron"),
            ({"schedule_type": "once", "schedule_value": "2001-01-01T00:00"}, "in the past"),
            ({"schedule_type": "cron", "schedule_value": "0 9 * * *", "timezone": "Nowhere/Land"}, "unknown time zone"),
            ({"schedule_type": "interval", "schedule_value": "10s"}, "at least 60"),
        ]:
            answer = await call(12, "schedule_task", {"prompt": "p", **args})
            assert answer["ok"] is False and reason in answer["error"], answer
        ok = await call(13, "schedule_task", {"prompt": "mine", "schedule_type": "interval", "schedule_value": "2h",
                                              "pre_script": "true"})
        assert ok["ok"], ok
        mine = await r.daemon.store.task(ok["result"]["task_id"])
        assert mine.folder == "alpha" and mine.pre_script == "true"
        assert (await r.daemon.store.task("beta-task")).status is TaskStatus.ACTIVE
        await stream.aclose()
        nursery.cancel_scope.cancel()


# -- pre-script verdicts and the runner's side -----------------------------------------------
def test_interpret_prescript() -> None:
    base = {"id": "p1", "exit_code": 0, "stderr": "", "error": None, "timed_out": False}

    def interpret(**fields: Any) -> tuple[bool, Any, str | None]:
        return interpret_prescript(PrescriptResult(**{**base, **fields}))

    assert interpret(stdout='{"wakeAgent": true, "data": {"n": 1}}') == (True, {"n": 1}, None)
    assert interpret(stdout='checking...\n{"wakeAgent": false}\n') == (False, None, None)
    assert "wakeAgent" in interpret(stdout='{"wake": true}')[2]
    assert "status 2" in interpret(exit_code=2, stdout="")[2]
    assert "timed out" in interpret(timed_out=True, timeout=3)[2]


def test_runner_runs_prescripts_with_a_timeout(tmp_path: Path, monkeypatch) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
    monkeypatch.setenv("NGB_WORKSPACE", str(tmp_path))
    (tmp_path / "group").mkdir()
    import runner as agent_runner

    r = agent_runner.Runner(agent_runner.Config())
    sent: list[PrescriptResult] = []

    async def send(frame: PrescriptResult) -> None:
        sent.append(frame)

    r.send = send  # type: ignore[method-assign]

    async def main() -> None:
        await r.run_prescript(Prescript(id="p1", command="pwd; echo '{\"wakeAgent\": true}'", timeout=5))
        await r.run_prescript(Prescript(id="p2", command="sleep 30 & sleep 30", timeout=0.3))
        await r.run_prescript(Prescript(id="p3", command="head -c 300000 /dev/zero | tr '\\0' x", timeout=5))

    asyncio.run(main())
    ok, slow, big = sent
    assert ok.exit_code == 0 and str(tmp_path / "group") in ok.stdout
    assert interpret_prescript(ok)[0] is True
    assert slow.timed_out is True
    assert big.truncated is True and len(big.stdout) == agent_runner.PRESCRIPT_STDOUT
    assert agent_runner.validate_host_frame({"type": "prescript", "id": "p", "command": " "})
    assert agent_runner.validate_host_frame({"type": "prescript", "id": "p", "command": "true", "timeout": 1}) is None


# -- the CLI (the daemon is not running: it works on the database directly) -------------------
def test_cli_tasks_add_list_pause_resume_cancel_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    from ngb import cli
    from tests.conftest import free_port

    monkeypatch.setenv("NGB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NGB_WEB_PORT", str(free_port()))
    monkeypatch.setenv("NGB_MOUNT_ALLOWLIST", str(tmp_path / "none.toml"))
    assert cli.main(["groups", "add", "local:fam", "--folder", "fam"]) == 0
    assert cli.main(["tasks", "add", "fam", "--cron", "0 9 * * 1-5", "--tz", "Europe/Berlin", "--prompt", "stand-up"]) == 0
    assert cli.main(["tasks", "add", "local:fam", "--every", "30m", "--isolated", "--pre-script", "true",
                     "--prompt", "check the build"]) == 0
    assert cli.main(["tasks", "add", "fam", "--at", "2099-12-01T18:00", "--prompt", "summary"]) == 0
    capsys.readouterr()
    assert cli.main(["tasks", "add", "fam", "--every", "10s", "--prompt", "x"]) == 2
    assert "at least 60" in capsys.readouterr().err
    assert cli.main(["tasks", "add", "nope", "--every", "1h", "--prompt", "x"]) == 2
    assert cli.main(["tasks", "list", "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)
    assert [(t["schedule_kind"], t["context_mode"]) for t in tasks] == [
        ("cron", "group"), ("interval", "isolated"), ("once", "group")]
    assert tasks[0]["timezone"] == "Europe/Berlin" and tasks[1]["pre_script"] == "true"
    task_id = tasks[0]["id"]
    assert cli.main(["tasks", "pause", task_id]) == 0
    assert "paused" in capsys.readouterr().out
    assert cli.main(["tasks", "resume", task_id]) == 0
    assert cli.main(["tasks", "cancel", task_id]) == 0
    assert cli.main(["tasks", "resume", task_id]) == 1
    assert "cancelled" in capsys.readouterr().err
    assert cli.main(["tasks", "runs", task_id]) == 0
    assert "no runs yet" in capsys.readouterr().out
    assert cli.main(["tasks", "list", "--group", "fam"]) == 0
    assert capsys.readouterr().out.count("fam") == 3


async def test_cli_tasks_with_the_daemon_running_pokes_its_scheduler(run_daemon, tmp_path: Path, monkeypatch, capsys) -> None:
    """`ngb tasks add` next to a running daemon: exit 0 and the daemon's scheduler hears of it at
    once (it used to crash at the end: httpx refuses to re-enter a client that was used)."""
    from ngb import cli

    d = await run_daemon()
    cfg = d.daemon.config
    monkeypatch.setenv("NGB_STATE_DIR", str(cfg.state_dir))
    monkeypatch.setenv("NGB_WEB_PORT", str(cfg.web_port))
    monkeypatch.setenv("NGB_MOUNT_ALLOWLIST", str(tmp_path / "none.toml"))
    pokes: list[int] = []
    original = d.daemon.scheduler.poke
    monkeypatch.setattr(d.daemon.scheduler, "poke", lambda *a, **k: (pokes.append(1), original(*a, **k))[1])
    code = await trio.to_thread.run_sync(cli.main, ["tasks", "add", "main", "--every", "1h", "--prompt", "hourly check"])
    assert code == 0, capsys.readouterr().err
    with trio.fail_after(5):
        while not pokes:
            await trio.sleep(0.02)
    assert [t.prompt for t in await d.daemon.store.tasks()] == ["hourly check"]
