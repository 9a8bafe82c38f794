"""The DingTalk Stream SDK as the channel drives it: its client with the one blocking call replaced
(opening a connection, over httpx) and one websocket session per call (reconnecting is the
channel's), the robot-message handler that hands each message to the trio side, and two log
filters (the SDK's ping noise; session webhooks in httpx's request lines)."""

from __future__ import annotations

import json
import logging
import platform
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import httpx
import websockets
from dingtalk_stream import CallbackHandler, CallbackMessage, Credential, DingTalkStreamClient
from dingtalk_stream.version import VERSION_STRING

from ..aio_bridge import Portal
from .common import AuthError

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from .dingtalk_settings import DingTalkSettings


class QuietPings(logging.Filter):
    """The SDK logs every SYSTEM ping (one a few seconds) as an 'unknown message topic' warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("unknown message topic") and record.args
                    and isinstance(record.args, tuple) and record.args[0] == "ping")


class HideSessions(logging.Filter):
    """httpx logs each request's URL; a session webhook's ``session=`` lets anyone post to the chat."""

    _SESSION = re.compile(r"([?&]session=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "session=" in text:
            record.msg, record.args = self._SESSION.sub(r"\1<redacted>", text), None
        return True


class RobotHandler(CallbackHandler):
    """The SDK's callback handler for robot messages: hands each one to the trio side and answers
    with what it says (``raw_process`` wraps that in the AckMessage the SDK sends)."""

    def __init__(self, portal: Portal, on_message: Callable[[dict[str, Any]], Awaitable[tuple[int, str]]]) -> None:
        super().__init__()
        self.portal = portal
        self.on_message = on_message

    async def process(self, message: CallbackMessage) -> tuple[int, str]:
        data = message.data if isinstance(message.data, dict) else {}
        return await self.portal.run(self.on_message, data)


class StreamClient(DingTalkStreamClient):
    """``DingTalkStreamClient`` with its one blocking call replaced: ``open_connection`` (``requests``
    on the event loop) becomes ``open_connection_async`` (httpx), and ``serve`` is one connection of
    the SDK's ``start()`` loop; reconnecting is ours. Routing, handlers and acks are the SDK's."""

    websocket: ClientConnection | None  # the SDK's attribute: the connection while serve() runs

    def __init__(self, settings: DingTalkSettings, logger: logging.Logger) -> None:
        super().__init__(Credential(settings.client_id, settings.client_secret), logger=logger)
        self.settings = settings

    def open_connection(self) -> Any:  # the SDK's version blocks the shared loop
        raise RuntimeError("use open_connection_async")

    def get_access_token(self) -> Any:  # blocking too; the channel gets its tokens itself
        raise RuntimeError("DingTalkChannel._access_token gets the tokens")

    async def open_connection_async(self) -> dict[str, str]:
        s = self.settings
        topics: list[dict[str, str]] = []
        if self._is_event_required:
            topics.append({"type": "EVENT", "topic": "*"})
        topics += [{"type": "CALLBACK", "topic": topic} for topic in self.callback_handler_map]
        body = {"clientId": s.client_id, "clientSecret": s.client_secret, "subscriptions": topics,
                "ua": f"dingtalk-sdk-python/v{VERSION_STRING}-union"}
        headers = {"Accept": "application/json",
                   "User-Agent": f"DingTalkStream/1.0 SDK/{VERSION_STRING} Python/{platform.python_version()} ngb"}
        async with httpx.AsyncClient(timeout=s.connect_timeout) as http:
            response = await http.post(s.gateway_url, json=body, headers=headers)
        answer = json_answer(response)
        code = str(answer.get("code") or "")
        low = code.lower()
        if response.status_code in (401, 403) or "auth" in low or "clientid" in low or "secret" in low:
            raise AuthError(f"open connection: HTTP {response.status_code} {code} {answer.get('message') or ''}".strip())
        if response.status_code != 200:
            raise ConnectionError(f"open connection: HTTP {response.status_code} {code or response.text[:200]}")
        endpoint, ticket = answer.get("endpoint"), answer.get("ticket")
        if not isinstance(endpoint, str) or not isinstance(ticket, str) or not endpoint.startswith(("ws://", "wss://")):
            raise ConnectionError(f"open connection: no endpoint and ticket in the answer ({sorted(answer)})")
        return {"endpoint": endpoint, "ticket": ticket}

    async def serve(self, connection: dict[str, str], on_open: Callable[[], Awaitable[None]]) -> None:
        """One websocket session: frames are routed by the SDK in arrival order, one at a time."""
        s = self.settings
        uri = f'{connection["endpoint"]}?ticket={quote_plus(connection["ticket"])}'  # as the SDK builds it
        async with websockets.connect(uri, open_timeout=s.connect_timeout, ping_interval=s.ping_interval,
                                      ping_timeout=s.ping_interval, close_timeout=3,
                                      max_size=4 * 1024 * 1024) as websocket:
            self.websocket = websocket
            try:
                await on_open()
                async for raw in websocket:
                    try:
                        frame = json.loads(raw)
                    except ValueError:
                        self.logger.warning("a frame that is not JSON (%d bytes) was ignored", len(raw))
                        continue
                    if isinstance(frame, dict):
                        await self.background_task(frame)  # route_message + ack; closes on "disconnect"
            finally:
                self.websocket = None


def json_answer(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
