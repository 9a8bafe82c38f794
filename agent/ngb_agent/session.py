"""Runner: one container's agent session, the runner side of docs/agent-protocol.md.

It connects to the control socket, says ``hello``, waits for ``start``, starts the Claude Code CLI
(agent_cli.py) and then pumps both ways: every ``input`` frame becomes a user message in the live
session, assistant text becomes ``output`` frames, every ResultMessage ``result`` frames
(batches.py); ``prescript`` frames run beside the turns (prescript.py). Frames are the typed
records of protocol.py, dispatched with ``match``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from .agent_cli import AgentCli
from .batches import Batches
from .drafts import Drafts
from .early_cli import SDK_LOADER
from .host import HostRequests, ModelForwarder, WebForwarder
from .host_tools import MAX_EXTRA_TOOLS, extra_tool_problem
from .images import image_blocks
from .prescript import run_prescript
from .protocol import (
    PROTOCOL_VERSION,
    BackFrame,
    BadFrame,
    Error,
    Hello,
    ImageRef,
    Input,
    Log,
    OutFrame,
    Output,
    Prescript,
    Session,
    Start,
    Stop,
    decode_out,
    encode,
    tag_of,
)
from .settings import MAX_FRAME, Config, say
from .wire import TOO_LONG, FrameError, FrameWriter, LineReader, decode_frame, split_text


class Runner:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.out: FrameWriter | None = None
        self.lines: LineReader | None = None
        self.forwarder = ModelForwarder(cfg.model_sock)
        self.web_forwarder = WebForwarder(cfg.web_sock)
        self.requests = HostRequests(cfg.requests_sock, cfg.request_timeout)
        self.cli = AgentCli(cfg, self.requests, web_notes=self.web_forwarder.notes if cfg.web_port else None)
        self.client: Any = None
        self.session_id: str | None = None
        self.session_sent: str | None = None
        self.batches = Batches()
        self.drafts: Drafts | None = None  # live previews, when start.previews asks for them
        self.stop_event = asyncio.Event()
        self.serving = False
        self.side_tasks: set[asyncio.Task[None]] = set()

    # -- frames ---------------------------------------------------------------------------

    async def send(self, frame: BackFrame) -> None:
        if self.out is not None:
            await self.out.send(encode(frame))

    async def log(self, level: str, message: str) -> None:
        say(f"{level}: {message}")
        await self.send(Log(level=level, message=message))

    async def error(self, message: str) -> None:
        say(f"error frame: {message}")
        await self.send(Error(error=message))

    async def read_frame(self) -> OutFrame | None:
        """Next well-formed frame from the host; malformed ones are answered and skipped."""
        assert self.lines is not None
        while True:
            line = await self.lines.next()
            if line is None:
                return None
            if line is TOO_LONG:
                await self.error(f"frame longer than {MAX_FRAME} bytes, discarded")
                continue
            assert isinstance(line, bytes)
            if not line.strip():
                continue
            try:
                frame = decode_out(decode_frame(line))
            except FrameError as exc:
                await self.error(str(exc))
                continue
            if isinstance(frame, BadFrame):
                await self.error(frame.reason)
                continue
            return frame

    # -- lifecycle --------------------------------------------------------------------------

    async def connect_control(self) -> None:
        deadline = time.monotonic() + self.cfg.connect_timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.cfg.control_sock))
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"cannot connect to {self.cfg.control_sock}: {exc}") from exc
                await asyncio.sleep(0.2)
        self.lines = LineReader(reader)
        self.out = FrameWriter(writer)

    async def handshake(self) -> bool:
        await self.send(Hello(PROTOCOL_VERSION))
        while True:
            frame = await self.read_frame()
            match frame:
                case None | Stop():
                    return False
                case Start():
                    break
                case _:
                    await self.error(f"expected a start frame first, got {tag_of(frame)!r}; ignored")
        cli = self.cli
        sid = frame.session_id
        cli.want_session = sid if sid is not None and sid.strip() else None
        if frame.group:
            cli.group = frame.group
        if frame.is_main is not None:
            if self.cfg.env_is_main is not None and frame.is_main != self.cfg.env_is_main:
                await self.log("warning", "start.is_main disagrees with NGB_IS_MAIN; using start.is_main")
            cli.is_main = frame.is_main
        cli.previews = frame.previews
        self.drafts = Drafts(self.send) if frame.previews else None
        cli.extra_tools = []
        for spec in frame.tools:
            problem = extra_tool_problem(spec)
            if problem is not None:
                await self.log("warning", f"plugin tool left out: {problem}")
            elif len(cli.extra_tools) < MAX_EXTRA_TOOLS:
                cli.extra_tools.append(spec)
        return True

    async def run(self) -> int:
        try:
            await self.connect_control()
        except ConnectionError as exc:
            say(str(exc))
            return 1
        try:
            if not await self.handshake():
                say("host closed the control connection or stopped before start")
                return 0
            self.cli.port = await self.forwarder.start(self.cfg.model_port)
            if self.cfg.web_port:
                # Before the CLI starts: its HTTP(S)_PROXY (set by the daemon) names this port.
                await self.web_forwarder.start(self.cfg.web_port)
            await self.cli.start_early()
            try:
                await SDK_LOADER.wait()
                self.client = await self.cli.open_client(lambda note: self.log("warning", note))
            except Exception as exc:  # noqa: BLE001
                await self.error(f"agent failed to start: {' '.join(str(exc).split())[:1000]}")
                return 1
            await self.log(
                "info",
                f"ready: group={self.cli.group} main={self.cli.is_main} model_port={self.forwarder.port}"
                f" resume={self.cli.want_session or '-'} resumed={self.cli.resumed}",
            )
            return await self.serve()
        finally:
            await self.shutdown()

    async def serve(self) -> int:
        self.serving = True
        control = asyncio.create_task(self.pump_control(), name="control")
        messages = asyncio.create_task(self.pump_messages(), name="messages")
        stopper = asyncio.create_task(self.stop_event.wait(), name="stop")
        done, _ = await asyncio.wait({control, messages, stopper}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if messages in done and not self.stop_event.is_set():
            exc = messages.exception()
            reason = f"{type(exc).__name__}: {exc}" if exc else "the agent process ended"
            await self.error(f"agent stopped unexpectedly: {' '.join(reason.split())[:1000]}")
            code = 1
        elif control in done and not control.cancelled() and control.exception() is not None:
            exc = control.exception()
            await self.error(f"control loop failed: {exc!r}")
            code = 1
        for t in (control, messages, stopper):
            t.cancel()
        await asyncio.gather(control, messages, stopper, return_exceptions=True)
        return code

    async def shutdown(self) -> None:
        await self.cli.discard_early()
        if self.client is not None:
            client, self.client = self.client, None
            if self.batches.pending:
                # A turn is running: abort it, or the CLI finishes it first (the SDK waits 5 s).
                try:
                    await asyncio.wait_for(client.interrupt(), 3)
                except Exception as exc:  # noqa: BLE001 - best effort on the way out
                    say(f"interrupt: {exc!r}")
            try:
                # Not under wait_for: the SDK bounds this itself and must not be cancelled
                # half-way (it would skip killing the CLI).
                await client.disconnect()
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                say(f"disconnect: {exc!r}")
        await self.requests.close()
        await self.forwarder.close()
        await self.web_forwarder.close()
        if self.out is not None:
            await self.out.close()

    # -- pumps ------------------------------------------------------------------------------

    async def pump_control(self) -> None:
        while True:
            frame = await self.read_frame()
            match frame:
                case None:
                    say("control connection closed by the host")
                    self.stop_event.set()
                    return
                case Stop():
                    self.stop_event.set()
                    return
                case Start():
                    await self.error("duplicate start frame ignored")
                case Input(batch=batch, prompt=prompt, images=images):
                    await self.submit(batch, prompt, images)
                case Prescript():
                    t = asyncio.create_task(self.run_prescript(frame), name=f"prescript:{frame.id}")
                    self.side_tasks.add(t)
                    t.add_done_callback(self.side_tasks.discard)

    async def run_prescript(self, frame: Prescript) -> None:
        """Run a scheduled task's pre-script (``/bin/sh -c``, cwd the group folder, the agent's
        sandbox) and report exit status, output and timeout; the host decides what they mean."""
        await self.send(await run_prescript(frame, self.cfg.cwd))

    async def submit(self, batch: int, prompt: str, images: list[ImageRef] | None = None) -> None:
        u = self.batches.open(batch)
        if u is None:
            await self.error(f"batch {batch} is already pending; ignored")
            return
        content: str | list[dict[str, Any]] = prompt
        if images:
            blocks, problems = image_blocks(images, self.cfg.cwd)
            for problem in problems:
                await self.log("warning", problem)
            content = [{"type": "text", "text": prompt}, *blocks]
        message = {
            "type": "user",
            "message": {"role": "user", "content": content},
            "parent_tool_use_id": None,
            "uuid": u,
        }

        async def one() -> AsyncIterator[dict[str, Any]]:
            yield message

        await self.client.query(one())

    async def pump_messages(self) -> None:
        from claude_agent_sdk import AssistantMessage, ResultMessage, StreamEvent, SystemMessage, TextBlock

        async for msg in self.client.receive_messages():
            if isinstance(msg, StreamEvent):
                if self.drafts is not None and msg.parent_tool_use_id is None:
                    await self.drafts.event(self.batches.speaking(msg), msg.event)
            elif isinstance(msg, SystemMessage):
                if msg.subtype == "init":
                    await self.note_session(msg.data.get("session_id"))
            elif isinstance(msg, AssistantMessage):
                if msg.parent_tool_use_id is not None:
                    continue  # a subagent's step, not text for the chat
                batch = self.batches.speaking(msg)
                if self.drafts is not None:
                    self.drafts.finished()
                await self.note_session(getattr(msg, "session_id", None))
                if getattr(msg, "error", None):
                    # The CLI's own "API Error: ..." text: the result frame carries it, not the chat.
                    text = " ".join(b.text for b in msg.content if isinstance(b, TextBlock))
                    await self.log("warning", f"model error ({msg.error}) in batch {batch}: {text[:500]}")
                    continue
                for block in msg.content:
                    if isinstance(block, TextBlock) and block.text.strip():
                        for piece in split_text(block.text):
                            await self.send(Output(batch=batch, text=piece))
            elif isinstance(msg, ResultMessage):
                await self.note_session(msg.session_id)
                for frame in self.batches.results(msg):
                    await self.send(frame)

    async def note_session(self, sid: Any) -> None:
        if not isinstance(sid, str) or not sid or sid == self.session_sent:
            return
        first = self.session_sent is None
        self.session_id = sid
        self.session_sent = sid
        cli = self.cli
        resumed = first and cli.resumed and sid == cli.want_session
        note = cli.fresh_note if first else "the agent switched to a new session"
        if first and cli.resumed and sid != cli.want_session:
            note = f"asked to resume {cli.want_session}, the agent reports session {sid}"
        await self.send(Session(session_id=sid, resumed=resumed, note=note))
