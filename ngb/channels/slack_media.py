"""Slack's files, both ways: the files a message carries become attachments (each downloaded from
``url_private_download`` with the bot token, through the channel's ``MediaIntake``) or one clear
note each; a file the agent sends goes up as ``files_upload_v2`` does it (files.getUploadURLExternal,
the bytes streamed to the URL it returned, files.completeUploadExternal into the channel and thread).
``_sending`` is the call both sends make (a message, a file), its errors mapped to ChannelError.

A download Slack does not authorise (no ``files:read`` scope, or a token it does not take) answers
200 with its HTML sign-in page, not an error: bytes that look like HTML where the file said it was
not text are that page, and become a note, never an attachment. The bot token goes only to Slack's
own file hosts (never to an external file's URL)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from ..aio_bridge import BridgeClosed
from ..media.intake import Fetch, Incoming, MediaIntake, MediaRefused, with_notes
from ..records import AttachmentKind, InboundMessage, OutgoingFile
from .base import ChannelError
from .common import Lru, markdown_to_slack_mrkdwn
from .slack_catchup import error_code, header_of
from .slack_settings import channel_id_of

if TYPE_CHECKING:
    from ..aio_bridge import AsyncioBridge

log = logging.getLogger("ngb.channels.slack")

FATAL_SEND_ERRORS = {"channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
                     "restricted_action", "cannot_reply_to_message", "missing_scope", "invalid_blocks",
                     "messages_tab_disabled", "invalid_channel", "invalid_arguments", "file_uploads_disabled",
                     "file_uploads_except_images_disabled", "file_upload_size_restricted",
                     "posting_to_general_channel_denied"}
CHUNK = 256 * 1024  # what an upload reads from the file at a time (in a worker thread)
HEAD = 512  # bytes looked at for the sign-in page
COMMENT_LIMIT = 3900  # initial_comment is message text: Slack's 4,000-character advice
SLACK_FILE_HOSTS = ("files.slack.com", "slack-files.com")
LOGIN_PAGE = "the download needs the files:read scope (Slack answered with its sign-in page)"
UNAVAILABLE = {
    "tombstone": "deleted",
    "hidden_by_limit": "hidden by the workspace's plan limits",
}


def slack_file_kind(file: dict[str, Any]) -> AttachmentKind:
    """What a Slack file says it is (a hint: the bytes decide the type)."""
    mime = str(file.get("mimetype") or "")
    top = mime.split("/", 1)[0]
    if file.get("subtype") == "slack_audio":  # a clip recorded in Slack
        return AttachmentKind.VOICE
    if top == "image":
        return AttachmentKind.IMAGE
    if top == "audio":
        return AttachmentKind.AUDIO
    if top == "video":
        return AttachmentKind.VIDEO
    return AttachmentKind.DOCUMENT


def slack_transcript(file: dict[str, Any], kind: AttachmentKind) -> str | None:
    """Slack's own transcript of an audio clip: ``transcription.preview`` once it is complete."""
    if kind not in (AttachmentKind.VOICE, AttachmentKind.AUDIO):
        return None
    transcription = file.get("transcription")
    if isinstance(transcription, dict):
        preview = transcription.get("preview") or {}
        content = preview.get("content") if isinstance(preview, dict) else None
        if transcription.get("status") == "complete" and isinstance(content, str) and content.strip():
            return content.strip() + (" …" if preview.get("has_more") else "")
        return None
    preview = file.get("preview")
    return preview.strip() if isinstance(preview, str) and preview.strip() else None


def incoming_of(file: dict[str, Any]) -> Incoming:
    kind = slack_file_kind(file)
    size = file.get("size")
    return Incoming(kind, name=file.get("name") or file.get("title") or None, mime=file.get("mimetype") or None,
                    size=size if isinstance(size, int) and size >= 0 else None,
                    transcript=slack_transcript(file, kind))


def declared_text(file: dict[str, Any]) -> bool:
    """The file says it is text (its mime type, or Slack's filetype): HTML bytes are no surprise."""
    mime = str(file.get("mimetype") or "")
    return mime.startswith("text/") or str(file.get("filetype") or "") in ("html", "text", "xml", "svg")


def looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<meta", b"<script", b"<!--"))


def not_a_login_page(fetch: Fetch, incoming: Incoming, file: dict[str, Any]) -> Fetch:
    """``fetch``'s bytes, held back until the first of them show they are not Slack's sign-in page
    (when the file said it was not text); that page is ``MediaRefused`` with the note."""
    if declared_text(file):
        return fetch

    def refuse_html(head: bytes) -> None:
        if looks_like_html(head):
            raise MediaRefused(f"[{incoming.describe()}: {LOGIN_PAGE}]")

    async def guarded() -> AsyncIterator[bytes]:
        got: Any = fetch()
        if inspect.isawaitable(got):
            got = await got
        if isinstance(got, bytes | bytearray | memoryview):
            refuse_html(bytes(got[:HEAD]))
            yield bytes(got)
            return
        head = b""  # what is held back until it is checked
        checked = False
        try:
            async for chunk in got:
                if checked:
                    yield chunk
                    continue
                head += chunk
                if len(head) >= HEAD:
                    refuse_html(head)
                    checked = True
                    yield head
            if not checked and head:
                refuse_html(head)
                yield head
        finally:
            aclose = getattr(got, "aclose", None)
            if aclose is not None:
                await aclose()

    return guarded


async def file_chunks(path: Any) -> AsyncIterator[bytes]:
    """A stored file, read in a worker thread a chunk at a time (never whole onto the loop)."""
    async with await trio.open_file(path, "rb") as f:
        while chunk := await f.read(CHUNK):
            yield chunk


class SlackFiles:
    """The files half of SlackChannel (a mixin: it shares the channel's web client, bridge and
    thread logic)."""

    settings: Any
    media: MediaIntake
    bridge: AsyncioBridge
    status: Any
    web: Any

    async def _api(self, method: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def _reply_thread(self, chat: str, reply_to: str | None) -> str | None:
        raise NotImplementedError

    # -- in --------------------------------------------------------------------------------------------
    _files_taken: Lru
    _failed_shares: Lru  # outbox key -> the file id of a share whose answer was lost

    async def with_files(self, inbound: InboundMessage, event: dict[str, Any]) -> InboundMessage:
        """The message with the files of its event taken (attachments) or noted. A message whose
        files were taken already in this run (the ``app_mention`` twin of a ``message`` event, a
        redelivery) is not downloaded again: the store keeps the first."""
        files = [f for f in event.get("files") or [] if isinstance(f, dict)]
        if not files or inbound.platform_id in self._files_taken:
            return inbound
        notes: list[str] = []
        items: list[tuple[Incoming, Fetch]] = []
        for file in files:
            file = await self._full_file(file)
            incoming = incoming_of(file)
            reason = self._not_downloadable(file)
            if reason is not None:
                notes.append(f"[{incoming.describe()}: {reason}]")
                continue
            url = str(file.get("url_private_download") or file.get("url_private"))
            fetch = self.media.fetch_url(url, {"Authorization": f"Bearer {self.settings.bot_token}"})
            items.append((incoming, not_a_login_page(fetch, incoming, file)))
        taken = await self.media.take_all(inbound.chat, items)
        return attrs.evolve(inbound, text=with_notes(inbound.text, [*taken.notes, *notes]),
                            attachments=taken.attachments)

    def files_done(self, inbound: InboundMessage, event: dict[str, Any]) -> None:
        """The message is stored: its files are not taken again in this run."""
        if event.get("files"):
            self._files_taken.put(inbound.platform_id, None)

    async def _full_file(self, file: dict[str, Any]) -> dict[str, Any]:
        """A Slack Connect file arrives as its id and ``file_access: check_file_info``: files.info has it."""
        if file.get("file_access") != "check_file_info" or not file.get("id"):
            return file
        try:
            answer = await self._api("files_info", file=file["id"])
            return dict(answer.get("file") or file)
        except Exception as exc:  # noqa: BLE001 - the note says the file could not be had
            log.info("slack: files.info %s failed: %s", file["id"], self.status.redact(str(exc)))
            return file

    def _not_downloadable(self, file: dict[str, Any]) -> str | None:
        mode = str(file.get("mode") or "")
        if mode in UNAVAILABLE:
            return UNAVAILABLE[mode]
        if file.get("is_external") or mode == "external":
            return f"an external file ({file.get('external_type') or 'link'}), not downloaded"
        url = file.get("url_private_download") or file.get("url_private")
        if not url:
            return "Slack gave no download URL (the app may need the files:read scope)"
        if not self._slack_host(str(url)):
            return "not on Slack's file host, not downloaded"
        return None

    def _slack_host(self, url: str) -> bool:
        """Slack's own file host (or the one the configured API lives on): the only place the bot token goes."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and (host in SLACK_FILE_HOSTS or host.endswith(".slack.com")):
            return True
        api = urlsplit(self.settings.base_url)
        return host == (api.hostname or "").lower() and parts.scheme == api.scheme and parts.port == api.port

    # -- out -------------------------------------------------------------------------------------------
    async def _sending(self, method: str, *, gone: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """A Web API call that sends (a message, a file) or changes a message: a short rate limit is
        waited out; an error in ``gone`` (the message to change is gone, or cannot be changed)
        answers None; other errors -> ChannelError, retryable or not."""
        from slack_sdk.errors import SlackApiError

        name = method.replace("_", ".")
        for attempt in range(3):
            try:
                return await self.bridge.call(getattr(self.web, method), **kwargs)
            except SlackApiError as exc:
                error = error_code(exc)
                if error == "ratelimited":
                    wait = float(header_of(exc, "retry-after") or 1)
                    if wait > 10 or attempt == 2:
                        raise ChannelError(f"slack: rate limited, retry in {wait:.0f}s", retryable=True) from None
                    await trio.sleep(wait)
                    continue
                if error in gone:
                    return None
                if error in FATAL_SEND_ERRORS:
                    hint = " (invite the bot to the channel: /invite @bot)" if error == "not_in_channel" else ""
                    raise ChannelError(f"slack: {name}: {error}{hint}", retryable=False) from None
                raise ChannelError(self.status.redact(f"slack: {name}: {error}"), retryable=True) from None
            except (TimeoutError, BridgeClosed, OSError) as exc:
                raise ChannelError(self.status.redact(f"slack: {type(exc).__name__}: {exc}"), retryable=True) from None
            except Exception as exc:  # noqa: BLE001 - aiohttp.ClientError and friends: network trouble
                if type(exc).__module__.startswith("aiohttp"):
                    raise ChannelError(self.status.redact(f"slack: {type(exc).__name__}: {exc}"), retryable=True) from None
                raise
        raise ChannelError("slack: could not send", retryable=True)

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None, *,
                        idempotency_key: str | None = None) -> str | None:
        """Upload ``file`` into the chat (into the thread a reply goes to), ``file.caption`` as its
        comment: files.getUploadURLExternal, the bytes to that URL, files.completeUploadExternal.
        Images and documents go the same way (Slack shows images inline). A share whose answer was
        lost (``idempotency_key``: the outbox row's) is looked up on the retry (files.info of the
        file it completed: shared into the channel already?) instead of sharing the file again."""
        channel = channel_id_of(chat)
        if self.web is None:
            raise ChannelError(f"slack is {self.status.state}", retryable=True)
        if idempotency_key is not None and (earlier := self._failed_shares.get(idempotency_key)) is not None:
            found = await self._shared_in(str(earlier), channel)
            if found is not None:
                log.info("slack: the file %s had been shared (%s) by an attempt whose answer was lost; not shared "
                         "again", file.name, found)
                self._failed_shares.pop(idempotency_key, None)
                return found
        thread_ts = await self._reply_thread(chat, reply_to)
        try:
            size = (await trio.Path(file.path).stat()).st_size
        except OSError as exc:
            raise ChannelError(f"slack: the file to send is gone ({exc.strerror})", retryable=False) from None
        answer = await self._sending("files_getUploadURLExternal", filename=file.name, length=size)
        file_id, url = answer.get("file_id"), answer.get("upload_url")
        if not file_id or not url:
            raise ChannelError("slack: files.getUploadURLExternal gave no upload URL", retryable=True)
        await self._upload(str(url), file, size)
        comment = markdown_to_slack_mrkdwn(file.caption) if file.caption.strip() else None
        if comment and len(comment) > COMMENT_LIMIT:
            log.info("slack: a caption of %d characters was cut to %d", len(comment), COMMENT_LIMIT)
            comment = comment[: COMMENT_LIMIT - 1] + "…"
        kwargs: dict[str, Any] = {"files": [{"id": file_id, "title": file.name}], "channel_id": channel}
        if comment:
            kwargs["initial_comment"] = comment
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        try:
            done = await self._sending("files_completeUploadExternal", **kwargs)
        except ChannelError as exc:
            if exc.retryable and idempotency_key is not None:
                self._failed_shares.put(idempotency_key, str(file_id))  # Slack may have shared it
            raise
        self._failed_shares.pop(idempotency_key or "", None)
        return shared_message_id(done, channel)

    async def _shared_in(self, file_id: str, channel: str) -> str | None:
        """The message the file ``file_id`` was shared in, in ``channel``, as files.info says; None
        when it was not (or Slack cannot say: the file goes again, a duplicate being the lesser harm)."""
        try:
            answer = await self._api("files_info", file=file_id)
        except Exception as exc:  # noqa: BLE001 - cannot tell: share again
            log.warning("slack: could not look up the file %s of an earlier attempt (%s); sharing again", file_id, exc)
            return None
        return shared_message_id({"files": [answer.get("file") or {}]}, channel)

    async def _upload(self, url: str, file: OutgoingFile, size: int) -> None:
        """The bytes to the upload URL, streamed from the file (Content-Length: the size declared)."""
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        try:
            async with httpx.AsyncClient(timeout=self.settings.request_timeout) as client:
                response = await client.post(url, content=file_chunks(file.path), headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            raise ChannelError(self.status.redact(f"slack: file upload: {type(exc).__name__}: {exc}"),
                               retryable=True) from None
        if response.status_code != 200:
            retryable = response.status_code != 413
            raise ChannelError(f"slack: file upload: HTTP {response.status_code}", retryable=retryable)


def shared_message_id(done: Any, channel: str) -> str | None:
    """The message the file was shared in, when Slack says it (``shares``) already; often it does not."""
    try:
        files = done.get("files") or []
        shares = files[0].get("shares") or {}
        for where in ("public", "private"):
            found = (shares.get(where) or {}).get(channel) or []
            if found and found[0].get("ts"):
                return f"{channel}:{found[0]['ts']}"
    except (AttributeError, IndexError, TypeError):
        pass
    return None
