"""The one small interface every channel implements, and the optional capabilities a channel
declares (typing, platform callbacks, idempotent sends, files out, history catch-up) as protocols:
the daemon's parts ask ``offers(channel, Typing)`` instead of probing attributes. Files in go
through the ``MediaIntake`` each channel is given (ngb/media/intake.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeGuard, TypeVar, runtime_checkable

import trio

from ..records import InboundMessage, Message, OutgoingFile

Submit = Callable[[InboundMessage], Awaitable[Message]]


class ChannelMemory(Protocol):
    """What a channel may keep in, and ask of, the daemon's store (ngb.store.Store is one)."""

    async def channel_marks(self, channel: str) -> dict[str, str]:
        """chat -> the newest platform message id the channel stored there."""
        ...

    async def set_channel_mark(self, channel: str, chat: str, mark: str) -> None: ...

    async def sent_by_bot(self, channel: str, platform_id: str) -> bool:
        """Whether this platform message is one the bot sent (stored when the outbox delivered it)."""
        ...

    async def chat_registered(self, chat: str) -> bool:
        """Whether a group is registered for this chat."""
        ...


class ChannelError(Exception):
    """A send failed; `retryable` says whether the outbox should try again later."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    name: str  # the prefix of its chats: "local", "telegram", ...
    state: str  # "connected" | "connecting" | "disconnected" | "stopped"

    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and turn platform events into submit(InboundMessage) calls, until cancelled."""
        ...

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        """Deliver text to chat; return the platform's message id (None when it has none).
        Raise ChannelError when it could not be delivered."""
        ...


@runtime_checkable
class Typing(Protocol):
    """Shows "typing..." in a chat for a few seconds (best effort; never raises)."""

    async def typing(self, chat: str) -> None: ...


@runtime_checkable
class Callbacks(Protocol):
    """Receives the platform's HTTP requests (webhooks) at ``callback_path`` (None: not now), served
    by the daemon's web server before its API guard; each request proves itself to the channel."""

    callback_path: str | None

    async def handle_callback(self, method: str, args: Mapping[str, str], body: bytes, remote: str | None = None,
                              headers: Mapping[str, str] | None = None) -> tuple[int, bytes]: ...


@runtime_checkable
class IdempotentSend(Protocol):
    """``send`` takes the outbox row's ``idempotency_key``: a retry of a send that reached the
    platform is recognised there (a nonce, a uuid) instead of posting the reply twice."""

    takes_idempotency_key: bool  # True: send takes idempotency_key

    async def send(self, chat: str, text: str, reply_to: str | None = None, *,
                   idempotency_key: str | None = None) -> str | None: ...


@runtime_checkable
class LooksBeforeResend(Protocol):
    """An IdempotentSend whose platform has no idempotency key of its own (Slack): ``send`` also
    takes ``maybe_sent_since`` (epoch seconds), given when the outbox row may have reached the
    platform in an attempt the channel cannot remember (one before a restart, or one a crash cut
    short); the channel then looks for a post carrying the key since then before it posts."""

    looks_before_resend: bool  # True: send takes maybe_sent_since

    async def send(self, chat: str, text: str, reply_to: str | None = None, *, idempotency_key: str | None = None,
                   maybe_sent_since: float | None = None) -> str | None: ...


@runtime_checkable
class FileSend(Protocol):
    """Sends a file to a chat: an image as a photo, anything else as a document (``file.kind``),
    with ``file.caption`` as its caption; returns the platform's message id like ``send``. The
    outbox sends one file per row and marks it sent only after this returned (ngb/outbox.py)."""

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None) -> str | None: ...


@runtime_checkable
class LivePreview(Protocol):
    """Shows a reply while the agent writes it: one message posted, then edited as the text grows
    (ngb/previews.py throttles the edits per chat), then edited to the final text by the outbox
    (docs/conversations.md). Every method raises ChannelError on failure; the daemon then stops
    previewing that message and the final text goes out as a normal send.

    ``send_preview`` posts ``text`` (plain text, not Markdown-converted: a half-written reply may
    hold an unclosed ``**``; cut to one message with a trailing "…" when longer) as a new message,
    a reply or in a thread like ``send`` would put it; returns its platform id (never None).
    ``edit_preview`` replaces that message's text the same way; an edit to the same text (the
    platform's "not modified") is success.
    ``finish_preview`` delivers the final reply through the preview: the preview edited to the first
    part (formatted as ``send`` formats), the other parts sent as new messages after it (threaded as
    ``send`` threads them); returns the platform id of the last part. The outbox may call it again
    after a crash or a retry: editing again is harmless, and parts already sent are not sent twice
    (the channel's partial-send memory, channels/common.py PartialSends, as ``send`` does)."""

    async def send_preview(self, chat: str, text: str, reply_to: str | None = None) -> str: ...

    async def edit_preview(self, chat: str, platform_id: str, text: str) -> None: ...

    async def finish_preview(self, chat: str, platform_id: str, text: str, reply_to: str | None = None) -> str | None: ...


@runtime_checkable
class Reactions(Protocol):
    """Puts the bot's emoji reaction on a message of a chat (``platform_id`` as the channel gave it
    in InboundMessage.platform_id) and takes it off again. ``emoji`` is a Unicode emoji ("👀");
    a channel whose platform names reactions (Slack's "eyes") maps it, and raises ChannelError
    (retryable=False) for one the platform does not have. Best effort: the daemon logs a failure
    and goes on (a reaction is never worth holding up a reply)."""

    async def react(self, chat: str, platform_id: str, emoji: str) -> None: ...

    async def unreact(self, chat: str, platform_id: str, emoji: str) -> None: ...


@runtime_checkable
class Pairing(Protocol):
    """Is linked to an account by scanning a QR code (WhatsApp): ``qr`` is the payload to show while
    it waits for the scan, None otherwise."""

    qr: str | None


_C = TypeVar("_C")

_MEMBERS: dict[type, tuple[str, ...]] = {
    Typing: ("typing",),
    Callbacks: ("callback_path", "handle_callback"),
    IdempotentSend: ("takes_idempotency_key", "send"),
    LooksBeforeResend: ("looks_before_resend", "send"),
    FileSend: ("send_file",),
    LivePreview: ("send_preview", "edit_preview", "finish_preview"),
    Reactions: ("react", "unreact"),
    Pairing: ("qr",),
}


def offers(channel: object, capability: type[_C]) -> TypeGuard[_C]:
    """``isinstance(channel, capability)`` as Python 3.11 answers it: each member found by getattr.
    From 3.12 isinstance looks members up statically and misses a wrapper's ``__getattr__``
    pass-through (a plugin's channel, ngb/plugins/channel.py), which would lose its capabilities."""
    return all(hasattr(channel, name) for name in _MEMBERS[capability])
