"""Media benchmark: a 10 MB document posted to the local chat, stored, and placed in a group's
folder; and the daemon's memory while 50 MB of attachments stream through it.

    .venv/bin/python -m bench.bench_media

- stored: `POST /api/chats/bench/messages` (multipart, one 10 MB file) -> 202, against a real
  `ngb run` on loopback (median of 5): the body parsed, the file hashed into the media store and
  the message stored with its attachment.
- placed: the hand-off of that message's file into the group's folder (ngb/media/handoff.py, the
  step before the agent's input), in process (median of 5).
- goal: stored + placed < 300 ms.
- memory: the daemon's RSS after 5 such uploads (50 MB) minus its RSS after a first small one;
  goal <= 20 MB (no file is held whole in memory: the form parser spools, the store streams).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.goals import Report, expect_status, rss_bytes, run, wait_healthz  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZE = 10 * 1024 * 1024
GOAL_MS = 300.0
GOAL_RSS_MB = 20.0


def document(size: int = SIZE) -> bytes:
    return b"%PDF-1.4\n" + os.urandom(size - 9)


def upload_figures() -> tuple[float, float]:
    """(median ms of a 10 MB POST -> 202, RSS growth in MB over 50 MB of uploads)."""
    import httpx

    from bench.goals import MeasurementFailed
    from ngb.api_token import client_token
    from tests.conftest import free_port

    tmp = Path(tempfile.mkdtemp(prefix="ngb-bench-media-"))
    port = free_port()
    env = dict(os.environ, NGB_STATE_DIR=str(tmp / "state"), NGB_WEB_PORT=str(port),
               NGB_MODEL_UPSTREAM="http://127.0.0.1:9", NGB_INSTANCE=f"benchmedia{os.getpid()}",
               NGB_MOUNT_ALLOWLIST=str(tmp / "none.toml"))
    proc = subprocess.Popen([sys.executable, "-m", "ngb", "run", "--no-build"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthz(proc, port, time.perf_counter())
        from types import SimpleNamespace

        token = client_token(SimpleNamespace(state_dir=tmp / "state", api_token=None), env={})
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as http:
            def post(data: bytes) -> float:
                t = time.perf_counter()
                r = http.post("/api/chats/bench/messages", data={"sender": "bench", "text": ""},
                              files=[("file", ("doc.pdf", data, "application/pdf"))])
                expect_status(r, 202)
                return (time.perf_counter() - t) * 1000

            post(document(256 * 1024))
            time.sleep(0.5)
            before = rss_bytes(proc)
            times = [post(document()) for _ in range(5)]
            time.sleep(0.5)
            after = rss_bytes(proc)
            rows = http.get("/api/chats/bench/messages").json()
            if sum(len(m["attachments"]) for m in rows) != 6:
                raise MeasurementFailed("not every upload was stored with its attachment")
        return statistics.median(times), (after - before) / 2**20
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


async def placed_ms() -> float:
    """Median ms to place a stored 10 MB document in a group's folder (the hand-off)."""
    from ngb.media.files import MediaFiles
    from ngb.media.handoff import Handoff
    from ngb.media.limits import MediaLimits
    from ngb.records import Attachment, AttachmentKind, Message, utcnow

    tmp = Path(tempfile.mkdtemp(prefix="ngb-bench-place-"))
    try:
        files = MediaFiles(tmp / "media")
        (tmp / "groups" / "g").mkdir(parents=True)

        async def save(*_: object) -> None:
            return None

        handoff = Handoff(files, MediaLimits(), tmp / "groups", agent_uid=os.getuid(), save_transcript=save)
        times = []
        for i in range(5):
            stored = await files.write_bytes(document())
            att = Attachment(AttachmentKind.DOCUMENT, "application/pdf", stored.size, "doc.pdf", stored.sha256, id=i + 1)
            msg = Message(id=i + 1, chat="local:g", sender="b", text="", time=utcnow(), attachments=(att,))
            t = time.perf_counter()
            placed = await handoff.place("g", [msg])
            times.append((time.perf_counter() - t) * 1000)
            assert placed.files[i + 1].path is not None
        return statistics.median(times)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(report: Report) -> None:
    stored, growth = upload_figures()
    placed = trio.run(placed_ms)
    report.figure("10 MB document: POST -> stored (median of 5)", stored, "ms", fmt=".0f")
    report.figure("10 MB document: placed in the group folder", placed, "ms", fmt=".0f")
    report.figure("10 MB document: stored + placed", stored + placed, "ms", GOAL_MS, fmt=".0f")
    report.figure("daemon RSS growth over 50 MB of uploads", growth, "MB", GOAL_RSS_MB)


def main() -> int:
    report = Report()
    measure(report)
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(run(main))
