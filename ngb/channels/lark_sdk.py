"""The parts of lark_oapi the Lark channel uses, imported once, off both loops (its websocket
module takes an event loop at import time), and the Open API's error."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

_SDK: SimpleNamespace | None = None
_SDK_LOCK = threading.Lock()


def _quiet_sdk_stdout_handler() -> None:
    """lark_oapi.core.log adds a handler of its own that prints to stdout ("[Lark] [time] ..."):
    under systemd each SDK line would reach the journal twice, once unstructured. Remove it; the
    records propagate to the daemon's handlers (journal/JSON/text, with secrets redacted)."""
    from lark_oapi.core import log as sdk_log

    sdk_log.logger.removeHandler(sdk_log.handler)
    sdk_log.logger.propagate = True


def import_sdk(loop: asyncio.AbstractEventLoop | None) -> SimpleNamespace:
    """Import what we use of lark_oapi (in a worker thread). lark_oapi.ws.client calls
    asyncio.get_event_loop() at import time: with the bridge's loop as this thread's current loop it
    gets that one instead of creating a loop of its own."""
    global _SDK
    with _SDK_LOCK:
        if _SDK is not None:
            return _SDK
        if loop is not None:
            asyncio.set_event_loop(loop)
        try:
            import lark_oapi
            from lark_oapi.core.const import UTF_8
            from lark_oapi.core.enum import AccessTokenType, HttpMethod
            from lark_oapi.core.http import Transport
            from lark_oapi.core.model import BaseRequest, RequestOption
            from lark_oapi.core.utils import AESCipher
            from lark_oapi.event.dispatcher_handler import EventDispatcherHandler
            from lark_oapi.ws import const as ws_const
            from lark_oapi.ws.enum import FrameType, MessageType
            from lark_oapi.ws.model import ClientConfig, EndpointResp
            from lark_oapi.ws.pb.pbbp2_pb2 import Frame
        finally:
            if loop is not None:
                asyncio.set_event_loop(None)
        _quiet_sdk_stdout_handler()
        _SDK = SimpleNamespace(
            lark=lark_oapi, UTF_8=UTF_8, AccessTokenType=AccessTokenType, HttpMethod=HttpMethod, Transport=Transport,
            BaseRequest=BaseRequest, RequestOption=RequestOption, AESCipher=AESCipher,
            EventDispatcherHandler=EventDispatcherHandler, ws_const=ws_const, FrameType=FrameType,
            MessageType=MessageType, ClientConfig=ClientConfig, EndpointResp=EndpointResp, Frame=Frame,
        )
        return _SDK


def sdk() -> SimpleNamespace:
    """The SDK (importing it here when no bridge is involved: tests, tools)."""
    return _SDK or import_sdk(None)


# Open API codes of a rejected tenant token: fetch a new one, retry once
TOKEN_INVALID = {99991661, 99991663, 99991664, 99991665, 99991668}


class ApiError(Exception):
    def __init__(self, what: str, code: Any, msg: str, status: int = 200) -> None:
        super().__init__(f"{what}: code {code}: {msg}" + (f" (HTTP {status})" if status != 200 else ""))
        self.code = code
        self.status = status


class LarkParts:
    """What the parts of LarkChannel (lark_events, lark_send, lark_media) share with it, declared for
    the type checker: its settings, the SDK client, the status, the media intake, the thread of each
    message, the tenant token and the Open API."""

    settings: Any
    client: Any
    status: Any
    media: Any  # media.intake.MediaIntake
    _threads: Any  # common.Lru: message id -> its thread id ("" when not in a thread)

    async def _api(self, what: str, call: Any, request: Any) -> Any:
        """``request``: the SDK request, or a function building it afresh for each attempt."""
        raise NotImplementedError

    async def _tenant_token(self, *, refresh: bool = False) -> str:
        raise NotImplementedError

