"""Lark's inbound events: a decoded (and, with an Encrypt Key, decrypted) event frame checked against
the verification token, parsed to an InboundMessage (rich text, mentions, placeholders; its files
taken by lark_media), redeliveries recognised, the sender's name looked up, and handed to the
inbound gate."""

from __future__ import annotations

import hmac
import json
import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..records import InboundMessage
from .lark_media import resources_of
from .lark_sdk import LarkParts, sdk
from .lark_settings import lark_chat

if TYPE_CHECKING:
    from .base import Submit
    from .common import InboundGate, Lru

log = logging.getLogger("ngb.channels.lark")

PLACEHOLDERS = {"image": "[image]", "audio": "[voice message]", "media": "[video]", "sticker": "[sticker]",
                "interactive": "[card]", "share_chat": "[shared chat]", "share_user": "[shared contact]",
                "merge_forward": "[forwarded messages]", "location": "[location]", "todo": "[task]",
                "calendar": "[calendar event]", "share_calendar_event": "[calendar event]", "vote": "[poll]",
                "hongbao": "[red packet]", "video_chat": "[video call]", "folder": "[folder]"}


class LarkEvents(LarkParts):
    """The inbound half of LarkChannel (a mixin: it shares the channel's client, gate and caches)."""

    bot_open_id: str | None
    refused: int
    duplicates: int
    _dispatcher: Any
    _decoded: list[Any]
    _seen: Lru
    _names: Lru
    _names_warned: bool
    _gate: InboundGate

    if TYPE_CHECKING:  # lark_media's and lark_reactions' (declared only: a method here would shadow theirs)
        async def _with_media(self, inbound: InboundMessage, message_type: str, content: str) -> InboundMessage: ...

        def note_message(self, message_id: str, chat_id: str | None, thread_id: str | None) -> None: ...

        async def take_reaction(self, submit: Submit, event: dict[str, Any]) -> None: ...

    async def _on_event(self, payload: bytes, submit: Submit) -> None:

        data = json.loads(payload)
        if isinstance(data, dict) and data.get("encrypt"):
            if not self.settings.encrypt_key:
                log.error("lark: an encrypted event arrived; set channels.lark.encrypt_key (the app's Encrypt Key)")
                self.refused += 1
                return
            payload = sdk().AESCipher(self.settings.encrypt_key).decrypt_str(data["encrypt"]).encode()
            data = json.loads(payload)
        header = data.get("header") or {}
        event_type = header.get("event_type") or (data.get("event") or {}).get("type")
        token = header.get("token") if data.get("schema") else data.get("token")
        expected = self.settings.verification_token
        if expected and not hmac.compare_digest(str(token or "").encode(), expected.encode()):
            self.refused += 1
            log.warning("lark: event %s refused: its verification token does not match channels.lark.verification_token",
                        header.get("event_id") or data.get("uuid") or "?")
            return
        if event_type == "im.message.reaction.created_v1":
            await self.take_reaction(submit, data.get("event") or {})
            return
        if event_type != "im.message.receive_v1":
            log.debug("lark: event %s ignored", event_type)
            return
        self._decoded.clear()
        self._dispatcher._do_without_validation(payload)  # the SDK's decoder (as its own ws client uses)
        if not self._decoded:
            return
        event = self._decoded.pop()
        inbound = self.to_inbound(event)
        if inbound is None:
            return
        if inbound.platform_id in self._seen:
            self.duplicates += 1
            log.debug("lark: message %s delivered again; already stored", inbound.platform_id)
            return
        message = event.event.message
        inbound = await self._with_media(inbound, message.message_type or "", message.content or "")
        sender_id = inbound.sender_id
        if self.settings.resolve_names and sender_id:
            inbound = attrs.evolve(inbound, sender=await self._name(sender_id))
        await self._gate.submit(submit, inbound)
        self._seen.put(inbound.platform_id, True)

    async def _name(self, open_id: str) -> str:
        if open_id in self._names:
            return str(self._names[open_id])
        name = open_id
        try:
            from lark_oapi.api.contact.v3 import GetUserRequest

            request = GetUserRequest.builder().user_id(open_id).user_id_type("open_id").build()
            with trio.fail_after(3):  # the event is acknowledged after this: Lark expects that within seconds
                response = await self._api("contact.v3.user.get", self.client.contact.v3.user.aget, request)
            user = getattr(response.data, "user", None)
            name = getattr(user, "name", None) or open_id
        except Exception as exc:  # noqa: BLE001 - a missing scope or a busy API: the id will do
            if not self._names_warned:
                self._names_warned = True
                log.warning("lark: cannot read sender names (%s); grant contact:user.base:readonly or set "
                            "channels.lark.resolve_names = false", self.status.redact(str(exc)))
        self._names.put(open_id, name)
        return name

    def to_inbound(self, event: Any) -> InboundMessage | None:
        """A P2ImMessageReceiveV1 -> InboundMessage (None for what is not a user's message)."""
        body = getattr(event, "event", None)
        message, sender = getattr(body, "message", None), getattr(body, "sender", None)
        if message is None or not message.message_id or not message.chat_id:
            return None
        sender_ids = getattr(sender, "sender_id", None)
        open_id = (getattr(sender_ids, "open_id", None) or getattr(sender_ids, "user_id", None) or "") if sender_ids else ""
        if getattr(sender, "sender_type", "user") not in (None, "user") or (open_id and open_id == self.bot_open_id):
            return None  # apps and bots, ourselves included
        mentions = list(message.mentions or [])
        text = self.message_text(message.message_type or "text", message.content or "{}", mentions)
        if not text.strip() and not resources_of(message.message_type or "", message.content or ""):
            return None
        mentions_bot = message.chat_type == "p2p" or any(
            self.bot_open_id and getattr(m.id, "open_id", None) == self.bot_open_id for m in mentions)
        self.note_message(message.message_id, message.chat_id, message.thread_id)
        try:
            when = datetime.fromtimestamp(int(message.create_time) / 1000, UTC)
        except (TypeError, ValueError):
            when = datetime.now(UTC)
        return InboundMessage(
            chat=lark_chat(message.chat_id),
            sender=self._names.get(open_id, open_id) if open_id else "unknown",
            text=text,
            platform_id=message.message_id,
            time=when,
            sender_id=open_id,
            mentions_bot=bool(mentions_bot),
            reply_to=message.parent_id or None,
            direct=message.chat_type == "p2p",
            thread=message.thread_id or "",
        )

    def message_text(self, message_type: str, content: str, mentions: list[Any]) -> str:
        """A message's content JSON -> plain text; @_user_N placeholders -> @name. The files of
        image, file, audio, video and rich-text messages become attachments (lark_media), not text."""
        try:
            data = json.loads(content)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        names = {m.key: (m.name or getattr(m.id, "open_id", None) or "someone") for m in mentions if m.key}

        def resolve(text: str) -> str:
            text = re.sub(r"@_user_\d+", lambda m: "@" + names.get(m.group(0), m.group(0)[1:]), text)
            return text.replace("@_all", "@all")

        if message_type == "text":
            return resolve(str(data.get("text") or ""))
        if message_type == "post":
            return resolve(post_text(data, names, markers=False))
        if message_type in ("image", "file", "audio", "media"):
            return ""
        if message_type == "system":
            return ""
        return PLACEHOLDERS.get(message_type, f"[{message_type}]")


def post_text(data: dict[str, Any], names: dict[str, str] | None = None, *, markers: bool = True) -> str:
    """A ``post`` (rich text) content -> plain text: the title, then one line per paragraph. Events
    carry ``{"title", "content"}``; sent posts wrap that in a locale (``{"zh_cn": {...}}``).
    ``markers``: embedded images and videos as ``[image]``/``[video]`` (else left out: they are
    taken as attachments)."""
    names = names or {}
    doc = data
    if "content" not in doc:
        doc = next((v for v in data.values() if isinstance(v, dict) and "content" in v), {})
    lines: list[str] = []
    title = str(doc.get("title") or "").strip()
    if title:
        lines.append(title)
    for paragraph in doc.get("content") or []:
        chunk: list[str] = []
        for el in paragraph or []:
            if not isinstance(el, dict):
                continue
            tag = el.get("tag")
            if tag in ("text", "md"):
                chunk.append(str(el.get("text") or ""))
            elif tag == "a":
                label, href = str(el.get("text") or ""), str(el.get("href") or "")
                chunk.append(f"{label} ({href})" if label and href and label != href else label or href)
            elif tag == "at":
                uid = str(el.get("user_id") or "")
                name = el.get("user_name") or names.get(uid) or ("all" if uid in ("all", "@_all") else uid.lstrip("@"))
                chunk.append(f"@{name}")
            elif tag == "emotion":
                chunk.append(f":{el.get('emoji_type') or ''}:")
            elif tag == "img" and markers:
                chunk.append("[image]")
            elif tag == "media" and markers:
                chunk.append("[video]")
            elif tag == "code_block":
                chunk.append(f"```{str(el.get('language') or '').lower()}\n{el.get('text') or ''}\n```")
            elif tag == "hr":
                chunk.append("---")
        lines.append("".join(chunk))
    return "\n".join(lines).strip()
