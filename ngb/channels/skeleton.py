"""The skeleton every platform channel shares, so an adapter writes only its platform session.

``PlatformChannel`` owns: the visible status (and ``status.set(STOPPED)`` however ``run`` ends),
the inbound gate (counting, first-seen logs, the trigger a reply threads to), multi-part sends that
resume, the newest stored id per chat (``marks``, in the daemon's store, for channels that catch
up), ``describe()``, the asyncio bridge for SDK-based channels, and the reconnect loop with
backoff around the adapter's ``session``. An adapter subclasses it and fills in:

    name = "telegram"                    # the prefix of its chats
    uses_asyncio = True                  # an asyncio SDK: the bridge is attached while running
    mark_order = int                     # it catches up: how its platform ids order (None: it does not)
    async def session(self, submit)      # connect, set CONNECTED, receive until the connection ends
    async def send(self, chat, text, reply_to=None)
    async def send_file(self, chat, file, reply_to=None)   # optional: files out (base.FileSend)
    def details(self) -> dict            # what describe() adds to the status
    async def prepare(self) / close()    # optional: before the first session / on the way out
    async def enter(self, stack)         # optional: more resources held while running
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import trio

from ..aio_bridge import BRIDGE, AsyncioBridge
from ..media.intake import MediaIntake, NoMedia
from .base import ChannelMemory, Submit
from .common import InboundGate, NewestStored, PartialSends
from .status import OFF, STOPPED, AuthError, ChannelStatus, reconnect_forever, redact_in_logs

log = logging.getLogger(__name__)


class PlatformChannel:
    name: ClassVar[str]
    uses_asyncio: ClassVar[bool] = False
    mark_order: ClassVar[Callable[[str], Any] | None] = None
    token_field: ClassVar[str | None] = None  # the settings field without which the channel is off

    def __init__(self, settings: Any, *, trigger: str = "", memory: ChannelMemory | None = None,
                 bridge: AsyncioBridge = BRIDGE, media: MediaIntake | None = None) -> None:
        self.settings = settings
        self.trigger = trigger
        self.memory = memory  # the daemon's store (catch-up marks, the bot's own messages)
        # Files in: each becomes a stored Attachment or a note (ngb/media/intake.py); without one
        # (a channel built alone) every file is a note saying so.
        self.media: MediaIntake = media if media is not None else NoMedia()
        self.bridge = bridge
        self.status = ChannelStatus(self.name, extra=self.status_details)
        self._gate = InboundGate(self.name, trigger)
        self._last_trigger = self._gate.last_trigger
        self._partial = PartialSends()
        self.submit_to: Submit | None = None  # the router, while running
        self.portal: Any = None  # the asyncio bridge's portal, while running (uses_asyncio)
        order = type(self).mark_order
        self.marks = NewestStored(self.name, memory, order=order) if order is not None else None

    def keep_secret(self, *secrets: str, loggers: tuple[str, ...] = ("ngb",)) -> None:
        """Redact these secrets from the status's error texts and from every log line."""
        self.status.secrets = list(secrets)
        for secret in secrets:
            redact_in_logs(secret, loggers)

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def received(self) -> int:
        return self._gate.received

    def describe(self) -> dict[str, Any]:
        out = self.status.describe()
        out.update(self.details())
        return out

    def details(self) -> dict[str, Any]:
        """What describe() adds to the status's details."""
        return {"received": self.received}

    def status_details(self) -> dict[str, Any]:
        """What the status itself shows besides its state (in /status too)."""
        return {}

    # -- the life cycle -------------------------------------------------------------------------------
    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Off (one status line) when the settings say why; else hold the resources, then run the
        session again and again (reconnect_forever) until cancelled."""
        off_reason = self.off_reason()
        if off_reason is not None:
            self.status.set(OFF, off_reason or None)
            task_status.started()
            await trio.sleep_forever()
        self.submit_to = submit
        async with AsyncExitStack() as stack:
            await self.enter(stack)
            task_status.started()  # the daemon does not wait for the platform to answer
            try:
                await self.prepare()
                await reconnect_forever(self.status, lambda: self.session(submit),
                                        base=self.settings.reconnect_base, cap=self.settings.reconnect_cap,
                                        is_auth_error=self.is_auth_error)
            finally:
                self.status.set(STOPPED)
                self.submit_to = None
                with trio.CancelScope(shield=True), trio.move_on_after(3):
                    await self.close()

    def off_reason(self) -> str | None:
        """Why the channel stays off (None: it runs); the settings say, e.g. "no token"."""
        if self.token_field is not None and not getattr(self.settings, self.token_field):
            return self.settings.off_reason or ""
        return getattr(self.settings, "off_reason", None) or None

    async def enter(self, stack: AsyncExitStack) -> None:
        """Take what the channel holds while it runs (before the daemon goes on)."""
        if self.uses_asyncio:
            self.portal = await stack.enter_async_context(self.bridge.attach())

    async def prepare(self) -> None:
        """Before the first session: read the marks the last run left."""
        if self.marks is not None:
            await self.marks.load()

    async def session(self, submit: Submit) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """On the way out (shielded, 3 s at most)."""

    async def close_on_loop(self, close: Callable[[], Coroutine[Any, Any, Any]] | None, what: str) -> None:
        """Close an SDK object on the asyncio loop (on the way out: a failure is only logged)."""
        if close is not None and self.bridge.running:
            try:
                await self.bridge.call(close)
            except Exception:  # noqa: BLE001 - closing on the way out
                log.debug("%s: error while closing %s", self.name, what, exc_info=True)

    def is_auth_error(self, exc: BaseException) -> bool:
        return isinstance(exc, AuthError)
