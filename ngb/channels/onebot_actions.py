"""OneBot v11 actions over one open websocket: a call matched to its response by ``echo``, its
``data`` on success and ActionFailed otherwise; events handed on in arrival order."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

from .ws_rpc import JsonRpcSocket, Route

log = logging.getLogger("ngb.channels.onebot")


class ActionFailed(Exception):
    def __init__(self, action: str, retcode: Any, message: str) -> None:
        super().__init__(f"{action}: retcode {retcode}: {message}")
        self.retcode = retcode


class OneBotConnection(JsonRpcSocket):
    """One open websocket to a OneBot implementation: API calls matched to responses by ``echo``,
    events handed to a memory channel in arrival order."""

    def __init__(self, ws: Any, label: str) -> None:
        super().__init__(ws, label)

    async def call(self, action: str, params: dict[str, Any], timeout: float) -> Any:
        """Run an action; its ``data`` on success, ActionFailed otherwise. ConnectionError when the
        socket goes away first, TimeoutError when no answer comes in time."""
        echo = f"ngb-{self.next_serial()}"
        response = await self.request(echo, {"action": action, "params": params, "echo": echo}, timeout)
        if response is None:
            raise ConnectionError(f"{self.label} closed before {action} was answered")
        status, retcode = response.get("status"), response.get("retcode")
        if status == "ok" or retcode == 0:
            return response.get("data")
        if status == "async" or retcode == 1:
            return None  # accepted, done later: no id
        raise ActionFailed(action, retcode, str(response.get("wording") or response.get("msg") or status))

    def route(self, frame: dict[str, Any]) -> Hashable:
        if "post_type" in frame:
            return Route.EVENT
        if "echo" in frame and ("status" in frame or "retcode" in frame):
            return str(frame["echo"])
        return Route.UNEXPECTED

    def malformed_frame(self, raw: Any, reason: ValueError) -> None:
        log.warning("qq: malformed frame from %s ignored (%s): %.200r", self.label, reason, raw)

    def unexpected_frame(self, raw: Any) -> None:
        log.warning("qq: frame from %s is neither an event nor a response, ignored: %.200r", self.label, raw)

    def late_response(self, raw: Any) -> None:
        log.debug("qq: response to an unknown or late call: %.200r", raw)
