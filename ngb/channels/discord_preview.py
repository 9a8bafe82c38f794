"""Discord's live previews (base.LivePreview), mixed into DiscordChannel.

The preview is a message where ``send`` puts a reply's first part (referencing the trigger, no pings
but the asker's), with the agent's text as it is (``send`` does not convert Markdown either: Discord
renders it, and a half-written ``**`` shows as text), cut to Discord's 2,000 characters with a
trailing "…". Each edit is an edit of that message (PATCH /channels/{id}/messages/{id}, through
discord.py's ``PartialMessage.edit``; no pings: the client's ``AllowedMentions.none()``). The final
reply edits it to its first part and sends the other parts after it, as ``send`` does (common steps:
live_preview.py). Discord takes an edit to the same text as any other; 404 Unknown Message (10008)
means a person deleted the preview: a preview edit is then a ChannelError (previewing ends), the
final reply goes out as a new message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..aio_bridge import BridgeClosed
from .base import ChannelError
from .common import split_text, utf16_len
from .discord_media import PART_LIMIT
from .discord_threads import locate, platform_id_in
from .live_preview import FinishesPreviews, PreviewGone, preview_text

if TYPE_CHECKING:
    from .common import LastTrigger

TEXT_LIMIT = 2000  # Discord's limit on a message's content
UNKNOWN_MESSAGE = 10008  # Discord's error code for a message that is not there


class DiscordPreviews(FinishesPreviews):
    """The live-preview half of DiscordChannel (a mixin: it shares the channel's client and sends)."""

    client: Any
    bridge: Any
    status: Any
    state: str
    _last_trigger: LastTrigger

    async def _post(self, channel_id: int, content: str | None, reference: int | None, nonce: str | None, *,
                    ping_author: bool = False, file: Any = None) -> str:
        raise NotImplementedError

    async def send_preview(self, chat: str, text: str, reply_to: str | None = None) -> str:
        """Post the preview where ``send`` would put the reply; its message id."""
        return await self._send_first(chat, preview_text(text, TEXT_LIMIT, measure=utf16_len), reply_to)

    async def edit_preview(self, chat: str, platform_id: str, text: str) -> None:
        if not await self._edit(chat, platform_id, preview_text(text, TEXT_LIMIT, measure=utf16_len)):
            raise ChannelError(f"discord: the preview {platform_id} was deleted", retryable=False)

    # -- finish_preview's steps (live_preview.py) ----------------------------------------------------
    def _final_parts(self, text: str) -> list[str]:
        return split_text(text, PART_LIMIT, measure=utf16_len)

    async def _edit_final(self, chat: str, platform_id: str, part: str) -> None:
        if not await self._edit(chat, platform_id, part):
            raise PreviewGone(platform_id)

    async def _send_first(self, chat: str, part: str, reply_to: str | None) -> str:
        """``part`` as ``send``'s first part: referencing ``reply_to`` (pinging its author) or the
        chat's newest trigger (pinging no one)."""
        self._check_connected()
        channel_id, reference = locate(chat, reply_to or self._last_trigger.get(chat))  # (in its thread)
        sent = await self._post(channel_id, part, reference, None, ping_author=bool(reply_to))
        return platform_id_in(chat, channel_id, sent)

    async def _send_after(self, chat: str, first_id: str, part: str, reply_to: str | None) -> str:
        """``part`` after the first one: a plain message where the first is (its channel or thread),
        as ``send`` sends it."""
        self._check_connected()
        channel_id = locate(chat, first_id)[0]
        return platform_id_in(chat, channel_id, await self._post(channel_id, part, None, None))

    # -- editing ---------------------------------------------------------------------------------------
    def _check_connected(self) -> None:
        if self.client is None or self.client.user is None:
            raise ChannelError(f"discord is {self.state}", retryable=True)

    async def _edit(self, chat: str, platform_id: str, content: str) -> bool:
        """Edit the bot's message ``platform_id`` to ``content``; False when it is gone."""
        import aiohttp
        import discord

        channel_id, message_id = locate(chat, platform_id)  # (in its thread)
        if message_id is None:
            raise ChannelError(f"discord: {platform_id} is not a message id", retryable=False)
        self._check_connected()

        async def edit() -> None:
            message = self.client.get_partial_messageable(channel_id).get_partial_message(message_id)
            await message.edit(content=content)

        try:
            await self.bridge.call(edit)
            return True
        except discord.NotFound as exc:
            if exc.code == UNKNOWN_MESSAGE:
                return False
            raise ChannelError(f"discord: not found: {exc.text} (unknown channel)", retryable=False) from None
        except discord.Forbidden as exc:
            raise ChannelError(f"discord: forbidden: {exc.text}", retryable=False) from None
        except discord.HTTPException as exc:
            retryable = exc.status == 429 or exc.status >= 500
            raise ChannelError(self.status.redact(f"discord: HTTP {exc.status}: {exc.text}"), retryable=retryable) from None
        except (TimeoutError, BridgeClosed, OSError, aiohttp.ClientError) as exc:
            raise ChannelError(self.status.redact(f"discord: {type(exc).__name__}: {exc}"), retryable=True) from None
