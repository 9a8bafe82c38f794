"""Media end to end: the real agent image, Docker engine and Claude Code CLI, against the local fake
of the Anthropic API and a local fake transcription server (issue "Media I", "Show it")."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from PIL import Image

from ngb.daemon import Daemon
from tests.conftest import api_headers, make_config
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.transcription import FakeTranscription
from tests.test_e2e_docker import tool_results

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class Live:
    def __init__(self, daemon: Daemon, fake: FakeAnthropic, voice: FakeTranscription) -> None:
        self.daemon, self.fake, self.voice = daemon, fake, voice
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{daemon.config.web_port}", headers=api_headers(daemon.config), timeout=30)

    async def post(self, text: str, files: list[tuple[str, bytes, str]] = ()) -> int:  # type: ignore[assignment]
        if files:
            r = await self.http.post("/api/chats/main/messages", data={"sender": "alice", "text": text},
                                     files=[("file", f) for f in files])
        else:
            r = await self.http.post("/api/chats/main/messages", json={"sender": "alice", "text": text})
        assert r.status_code == 202, r.text
        return int(r.json()["id"])

    async def bot_replies(self, count: int, timeout: float = 90) -> list[dict[str, Any]]:
        with trio.fail_after(timeout):
            while True:
                r = await self.http.get("/api/chats/main/messages", params={"after": 0})
                bot = [m for m in r.json() if m["from_bot"]]
                if len(bot) >= count:
                    return bot
                await trio.sleep(0.1)


@pytest.fixture
async def live(tmp_path: Path, agent_image: str) -> AsyncIterator[Live]:
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        voice = FakeTranscription(text="please water the basil on friday")
        await nursery.start(voice.serve)
        config = make_config(tmp_path, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY="sk-ant-test-key-0123456789",
                             NGB_IDLE_TIMEOUT="20", NGB_INSTANCE=f"media{os.getpid()}", NGB_CONTAINER_MEMORY="768m",
                             NGB_TRANSCRIBE_URL=voice.url)
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        live = Live(daemon, fake, voice)
        try:
            yield live
        finally:
            await live.http.aclose()
            nursery.cancel_scope.cancel()


def image_blocks(req: Any) -> list[dict[str, Any]]:
    out = []
    for message in (req.json or {}).get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            out.extend(b for b in content if isinstance(b, dict) and b.get("type") == "image")
    return out


async def test_files_in_and_out_through_the_container(live: Live) -> None:
    # 1. A PNG posted to the local chat reaches the model as an image block of the user turn.
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(buf, "PNG")
    png = buf.getvalue()
    await live.post("what colour is this?", [("green.png", png, "image/png")])
    await live.bot_replies(1)
    req = next(r for r in live.fake.message_requests if image_blocks(r))
    [block] = image_blocks(req)
    assert block["source"]["media_type"] == "image/png"
    assert base64.b64decode(block["source"]["data"]) == png

    # 2. A text document: the agent reads it with its Read tool at the path the prompt names.
    notes = b"The launch code is 4711.\n"
    read = {"file_path": "/workspace/group/attachments/2-notes.txt"}  # attachment 2 of a fresh state
    await live.post(f"[[tool:Read {json.dumps(read)}]]", [("notes.txt", notes, "text/plain")])
    await live.bot_replies(2)
    assert any("The launch code is 4711." in t for t in tool_results(live.fake))

    # 3. A voice note is transcribed by the configured service; the transcript is in the model request.
    voice = b"OggS\x00\x02" + os.urandom(4000)
    await live.post("", [("note.ogg", voice, "audio/ogg")])
    await live.bot_replies(3)
    assert [c.data for c in live.voice.calls] == [voice]
    assert any("please water the basil on friday" in json.dumps(r.json) for r in live.fake.message_requests)

    # 4. The agent writes a file and sends it: it arrives in the local chat with the same bytes.
    report = "city,temp\nBerlin,21\n"
    write = {"file_path": "/workspace/group/out/report.csv", "content": report}
    await live.post(f"[[tool:Write {json.dumps(write)}]]")
    await live.bot_replies(4)
    await live.post('[[tool:mcp__ngb__send_file {"path": "out/report.csv", "caption": "the report"}]]')
    with trio.fail_after(90):
        while True:
            r = await live.http.get("/api/chats/main/messages", params={"after": 0})
            sent = [m for m in r.json() if m["from_bot"] and m["attachments"]]
            if sent:
                break
            await trio.sleep(0.1)
    [att] = sent[0]["attachments"]
    assert att["name"] == "report.csv" and sent[0]["text"] == "the report"
    got = await live.http.get(att["url"])
    assert got.content == report.encode()

    # 5. A path out of the folder is refused to the agent with the reason. (First the send_file turn
    # ends with its "Done" text: a message posted mid-turn would be taken into that turn, and the
    # fake model reads a directive only in the last user message.)
    bot = await live.bot_replies(6)  # ... 4 replies, the file, and "Done: mcp__ngb__send_file"
    assert any(m["text"].startswith("Done: mcp__ngb__send_file") for m in bot), bot
    await live.post('[[tool:mcp__ngb__send_file {"path": "/etc/passwd"}]]')
    with trio.fail_after(90):
        while not any("is not inside your group folder" in t for t in tool_results(live.fake)):
            await trio.sleep(0.1)
