"""DingTalk's sending: a reply split into parts, each through the chat's session webhook while it is
valid, else through the robot API (group messages, or 1:1 messages to a staff id) with an access
token of its own. DingTalk robots have no typing indicator."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx
import trio

from .base import ChannelError
from .common import split_text
from .dingtalk_settings import conversation_id_of
from .dingtalk_stream import json_answer

if TYPE_CHECKING:
    from .common import Lru, PartialSends
    from .dingtalk_conversations import Conversation

log = logging.getLogger("ngb.channels.dingtalk")

PART_BYTES = 6000  # a robot message may carry 20,000 bytes; long ones are folded by the client anyway


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


class DingTalkSending:
    """The outbound half of DingTalkChannel (a mixin: it shares the channel's HTTP client and chats)."""

    settings: Any
    status: Any
    state: str
    http: httpx.AsyncClient | None
    _convs: Lru
    _partial: PartialSends
    _token: tuple[str, float] | None
    _token_lock: trio.Lock
    sent_by_webhook: int
    sent_by_api: int

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        """Deliver ``text`` (split under 6,000 bytes): the chat's session webhook while valid, else the
        robot API. Returns the robot API's processQueryKey of the first part (None: webhook only)."""
        conversation_id = conversation_id_of(chat)
        if self.http is None:
            raise ChannelError(f"dingtalk is {self.state}", retryable=True)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_BYTES, measure=utf8_len)
        for index in range(len(ids), len(parts)):
            ids.append(await self._send_part(chat, conversation_id, parts[index]) or "")
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return next((i for i in ids if i), None)

    async def _send_part(self, chat: str, conversation_id: str, part: str) -> str | None:
        return await self._deliver(chat, conversation_id, *self._message(part))

    async def _deliver(self, chat: str, conversation_id: str, kind: str, body: dict[str, str]) -> str | None:
        """One text or markdown message: the chat's session webhook while valid, else the robot API."""
        conv: Conversation | None = self._convs.get(chat)
        if conv is not None and conv.webhook and time.time() < conv.webhook_expires - self.settings.webhook_margin:
            try:
                await self._post_webhook(conv.webhook, kind, body)
                self.sent_by_webhook += 1
                return None
            except ChannelError as exc:
                log.info("dingtalk: session webhook of %s failed (%s); using the robot API", chat, exc)
                conv.webhook = None
        key = await self._robot_message(chat, conversation_id, conv,
                                        "sampleText" if kind == "text" else "sampleMarkdown", body)
        self.sent_by_api += 1
        return key

    def _message(self, part: str) -> tuple[str, dict[str, str]]:
        if self.settings.message_type == "text":
            return "text", {"content": part}
        return "markdown", {"title": title_of(part), "text": part}

    async def _post_webhook(self, url: str, kind: str, body: dict[str, str]) -> None:
        assert self.http is not None
        try:
            response = await self.http.post(url, json={"msgtype": kind, kind: body})
        except httpx.HTTPError as exc:
            raise ChannelError(f"dingtalk: session webhook: {type(exc).__name__}: {exc}", retryable=True) from None
        answer = json_answer(response)
        errcode = answer.get("errcode", 0 if response.status_code == 200 else response.status_code)
        if response.status_code == 200 and errcode == 0:
            return
        raise ChannelError(f"dingtalk: session webhook: {errcode} {answer.get('errmsg') or ''}".strip(), retryable=True)

    async def _robot_message(self, chat: str, conversation_id: str, conv: Conversation | None, msg_key: str,
                             param: dict[str, Any]) -> str:
        """One robot message (``msgKey`` and its ``msgParam``) through the robot API: to the group, or
        to the 1:1 chat's staff id. Returns its processQueryKey."""
        msg = {"robotCode": self.settings.robot_code, "msgKey": msg_key,
               "msgParam": json.dumps(param, ensure_ascii=False)}
        if conv is not None and conv.kind == "1":
            if not conv.staff_id:
                raise ChannelError(f"dingtalk: no staff id for the 1:1 chat {chat} (an external user?)", retryable=False)
            answer = await self._api("/v1.0/robot/oToMessages/batchSend", {**msg, "userIds": [conv.staff_id]}, chat, conv)
            if conv.staff_id in (answer.get("invalidStaffIdList") or []):
                raise ChannelError(f"dingtalk: the robot cannot write to {conv.staff_id}", retryable=False)
            if conv.staff_id in (answer.get("flowControlledStaffIdList") or []):
                raise ChannelError(f"dingtalk: rate limited for {conv.staff_id}", retryable=True)
        else:
            answer = await self._api("/v1.0/robot/groupMessages/send", {**msg, "openConversationId": conversation_id},
                                     chat, conv)
        return str(answer.get("processQueryKey") or "")

    async def _api(self, path: str, body: dict[str, Any], chat: str, conv: Conversation | None) -> dict[str, Any]:
        assert self.http is not None
        for attempt in range(2):
            token = await self._access_token()
            try:
                response = await self.http.post(self.settings.api_base + path, json=body,
                                                 headers={"x-acs-dingtalk-access-token": token})
            except httpx.HTTPError as exc:
                raise ChannelError(f"dingtalk: {path}: {type(exc).__name__}: {exc}", retryable=True) from None
            answer = json_answer(response)
            status, code = response.status_code, str(answer.get("code") or "")
            if status == 200:
                return answer
            if status == 401 and attempt == 0:  # the token expired early or was revoked: get a new one
                self._token = None
                continue
            what = f"dingtalk: {path}: HTTP {status} {code} {answer.get('message') or ''}".strip()
            if status == 429 or "throttl" in code.lower() or "flowcontrol" in code.lower() or status >= 500:
                raise ChannelError(what, retryable=True)
            if status == 403:
                raise ChannelError(what + " (grant the app the robot message permission, see docs/channels/dingtalk.md)",
                                   retryable=False)
            if conv is None:  # a chat never seen (or not kept): perhaps 1:1, whose staff id we do not know
                raise ChannelError(what + f" (no message from {chat} seen yet; held until one arrives)",
                                   retryable=True)
            raise ChannelError(what, retryable=False)
        raise ChannelError(f"dingtalk: {path}: the access token was refused twice", retryable=True)

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and trio.current_time() < self._token[1]:
                return self._token[0]
            assert self.http is not None
            s = self.settings
            try:
                response = await self.http.post(s.api_base + "/v1.0/oauth2/accessToken",
                                                 json={"appKey": s.client_id, "appSecret": s.client_secret})
            except httpx.HTTPError as exc:
                raise ChannelError(f"dingtalk: access token: {type(exc).__name__}: {exc}", retryable=True) from None
            answer = json_answer(response)
            token = answer.get("accessToken")
            if response.status_code != 200 or not isinstance(token, str):
                raise ChannelError(self.status.redact(
                    f"dingtalk: access token refused: HTTP {response.status_code} {answer.get('code') or ''} "
                    f"{answer.get('message') or ''}").strip(), retryable=True)
            lifetime = float(answer.get("expireIn") or 7200)
            self._token = (token, trio.current_time() + max(60.0, lifetime - 300))
            return token


def title_of(part: str) -> str:
    """A markdown message's title (what notifications show): its first line, as plain text."""
    for line in part.splitlines():
        plain = line.strip().lstrip("#>-*+ ").replace("**", "").replace("`", "").strip()
        if plain:
            return plain[:30]
    return "reply"
