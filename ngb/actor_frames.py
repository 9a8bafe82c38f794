"""What the agent says, as the group's actor handles it: the frames read back from the container
(output, preview, result, session, errors) turned into replies in the outbox, cursor moves,
sessions kept and failed turns reported. A part of GroupActor (ngb/actor.py), kept in its own module;
the attributes below are the actor's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .actor_view import ActorMedia, ActorView
from .agent_link import AgentConnection
from .conversation import Conversation
from .framing import FrameError
from .lanes import Lane, Lanes
from .preview_sink import PreviewSink
from .protocol import BadFrame, Error, Hello, Log, Output, PrescriptResult, Preview, Result, Session
from .records import Attachment, Group
from .store import Store
from .tasks.runs import TaskRuns
from .turn_gate import TurnGate

log = logging.getLogger("ngb.actor")


class AgentFrames:
    group: Group
    store: Store
    view: ActorView
    media: ActorMedia
    outbox_wake: Callable[[], None]
    _on_event: Callable[[str, dict[str, Any]], None]
    _gate: TurnGate
    _runs: TaskRuns
    _previews: PreviewSink
    _lanes: Lanes
    _lane: Lane
    _failures: dict[int, int]

    @property
    def folder(self) -> str:
        return self.group.folder

    # -- what the agent says -------------------------------------------------------------------
    async def _read_frames(self, conv: Conversation, conn: AgentConnection) -> str:
        while True:
            frame = await conn.receive()
            match frame:
                case None:
                    return "exited"
                case FrameError(reason=reason) | BadFrame(reason=reason):
                    log.warning("group %s: malformed frame from the agent: %s", self.folder, reason)
                case Output():
                    await self._output(conv, frame)
                case Preview(batch=batch, text=text) if batch in conv.batches:
                    # a chat batch's reply so far (a task's answer is not previewed)
                    self._previews.show(self.folder, self.group.chat, conv.reply_to.get(batch), text)
                case Preview():
                    pass
                case Result():
                    await self._result(conv, frame)
                case PrescriptResult():
                    await self._runs.prescript_done(conv, conn, frame)
                case Session(session_id=session_id, note=note):
                    if session_id and conv.isolated is None:
                        await self._save_session(session_id)
                    if note:
                        log.info("group %s: %s", self.folder, note)
                case Error(error=error):
                    log.warning("group %s: agent error: %s", self.folder, error)
                    self.view.last_turn_error = error
                case Log(message=message):
                    log.info("group %s: agent: %s", self.folder, message[:500])
                case Hello():
                    log.warning("group %s: a second hello from the agent, ignored", self.folder)

    async def _output(self, conv: Conversation, frame: Output) -> None:
        batch, text = frame.batch, frame.text
        if not text.strip():
            return
        cursor_to = conv.covered(batch, pop=False)
        preview_id = await self._previews.finish(self.folder)  # the message showing it grow, if any
        turn = self._runs.speaker(conv, batch, text)
        chat = turn.task.chat if turn is not None else self.group.chat
        images: list[Attachment] = []
        if self.media.outgoing is not None and "![" in text:
            text, images = await self.media.outgoing.markdown_images(self.folder, text)
        if cursor_to is None:
            # Output outside a live batch (e.g. late text, a task's answer): deliver it, move nothing.
            await self.store.commit_reply(self.folder, chat, text, None, files=images, preview_id=preview_id)
        else:
            reply_to = conv.reply_to.get(batch) if batch is not None and turn is None else None
            await self.store.commit_reply(self.folder, chat, text, cursor_to, reply_to=reply_to, files=images,
                                          preview_id=preview_id, thread=self._lane.thread,
                                          reply_thread=conv.reply_thread.get(batch or 0, "") if turn is None else "")
            if batch not in conv.had_output:
                conv.had_output.add(batch)
                self._on_event("first_reply", {"batch": batch})
        self.view.replies += 1
        self.outbox_wake()

    async def _result(self, conv: Conversation, frame: Result) -> None:
        batch = frame.batch
        cursor_to = conv.covered(batch, pop=True)
        if frame.session_id and conv.isolated is None:
            await self._save_session(frame.session_id)
        await self._runs.results(conv, frame)
        if cursor_to is not None:
            if frame.is_error and batch not in conv.had_output and not self._gate.over_budget(self.folder):
                error = frame.error or "the agent reported an error"
                self.view.last_turn_error = error
                await self.store.record_failed_turn(
                    self.folder, cursor_to, error, (self.group.chat, f"⚠️ Sorry, I could not answer: {error}"),
                    self._lane.thread,
                )
                self.outbox_wake()
            else:
                await self.store.advance_cursor(self.folder, cursor_to, self._lane.thread)
            self._failures.clear()
        self._on_event("result", {"batch": batch, "usage": frame.usage})
        conv.rearm_if_idle()

    async def _save_session(self, session_id: str) -> None:
        if session_id != self.view.session_id:
            self.view.session_id = session_id
            await self._lanes.save_session(self._lane, session_id)

    async def _turn_failed(self, outstanding: dict[int, int], reason: str, *, retry: bool = True) -> None:
        up_to = max(outstanding.values())
        self.view.last_turn_error = reason
        tries = self._failures.get(up_to, 0) + 1
        self._failures[up_to] = tries
        log.warning("group %s: turn failed (%s), try %d", self.folder, reason, tries)
        self._on_event("turn_failed", {"reason": reason, "try": tries})
        if tries < 2 and retry:
            return  # retried once in a fresh container: the cursor did not move
        self._failures.pop(up_to, None)
        await self.store.record_failed_turn(
            self.folder, up_to, reason, (self.group.chat, f"⚠️ Sorry, I could not answer: {reason}."), self._lane.thread
        )
        self.outbox_wake()
