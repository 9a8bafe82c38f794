"""Full disk for the state folder: a 2 MB tmpfs mounted for the test (root only; unmounted after).
Writes that fail with "database or disk is full" are logged and retried; a message posted while
the disk is full is stored once space is back, and answered; nothing is lost or doubled."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
import trio

from tests.fakes.agent import FakeBehaviour


@pytest.fixture
def small_disk(tmp_path: Path):
    assert os.geteuid() == 0, "the full-disk test mounts a tmpfs: run the suite as root (scripts/test.sh does)"
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> Path:
    """Fill the file system holding `path` to the last byte."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
async def test_full_disk_is_logged_retried_and_nothing_is_lost(run_daemon, small_disk: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ngb.store")
    d = await run_daemon(FakeBehaviour(), state=small_disk, NGB_IDLE_TIMEOUT="0.2")
    first = await d.post("main", "before the disk fills")
    await d.wait_bot_replies("main", 1)
    store = d.daemon.store
    errors_before = store.write_errors
    # large messages so the WAL must grow
    filler = await trio.to_thread.run_sync(fill, small_disk)
    statuses: list[int] = []

    async def post_while_full(i: int) -> None:
        r = await d.http.post("/api/chats/main/messages", json={"sender": "alice", "text": f"while full {i} " + "z" * 8000})
        statuses.append(r.status_code)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(post_while_full, i)
        with trio.fail_after(10):
            while store.write_errors == errors_before:  # the store hit the full disk and is retrying
                await trio.sleep(0.02)
        await trio.sleep(0.3)
        filler.unlink()  # space is back
    assert store.write_errors > errors_before
    assert any("full" in r.getMessage() for r in caplog.records), "the full disk is logged"
    assert statuses == [202, 202, 202], statuses  # retried until space came back, not refused
    history = await d.history("main")
    texts = [m["text"] for m in history if not m["from_bot"]]
    assert texts[0] == "before the disk fills" and history[0]["id"] == first
    for i in range(3):
        assert sum(1 for t in texts if t.startswith(f"while full {i} ")) == 1, "stored exactly once"
    # and answered (the agent may answer the three in one turn)
    with trio.fail_after(10):
        while not any(m["from_bot"] and m["text"].startswith("Echo: while full") for m in await d.history("main")):
            await trio.sleep(0.05)
    assert await store.integrity_ok()


@pytest.mark.slow
async def test_disk_full_past_the_retry_budget_refuses_cleanly(run_daemon, small_disk: Path) -> None:
    d = await run_daemon(FakeBehaviour(), state=small_disk)
    d.daemon.store._retries = 2  # a short budget so the refusal comes quickly
    await d.post("main", "hello")
    await d.wait_bot_replies("main", 1)
    filler = await trio.to_thread.run_sync(fill, small_disk)
    r = await d.http.post("/api/chats/main/messages", json={"sender": "alice", "text": "refused " + "z" * 8000})
    assert r.status_code == 503 and "error" in r.json()
    filler.unlink()
    # the daemon is still up and takes the message on the client's retry
    mid = await d.post("main", "after space is back")
    assert await d.daemon.store.integrity_ok()
    with trio.fail_after(10):
        while not any(m["text"] == "Echo: after space is back" for m in await d.history("main", after=mid)):
            await trio.sleep(0.05)
    assert not any(m["text"].startswith("refused ") for m in await d.history("main")), "not stored half-way"
