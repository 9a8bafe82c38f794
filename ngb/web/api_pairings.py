"""Direct messages from strangers waiting for the operator (docs/conversations.md, ngb/pairing.py).

    GET    /api/pairings?state=               pairings, newest first (state: pending, approved,
                                              denied; default all): {"code", "chat", "sender",
                                              "sender_id", "created", "expires", "notified",
                                              "state", "folder", "expired"}
    POST   /api/pairings/<code>/approve       register the chat as its own group -> 200 Group;
                                              a wrong, used or expired code -> 400 with the reason
    POST   /api/pairings/<code>/deny          -> 200 the pairing (the chat is told nothing more)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart_trio import QuartTrio

from ..pairing import PairingError, shown
from ..records import Pairing, PairingState, to_json, utcnow
from .common import ApiError, str_arg

if TYPE_CHECKING:
    from .backend import WebBackend


def pairing_json(pairing: Pairing) -> dict[str, Any]:
    return {**to_json(pairing), "code": shown(pairing.code), "expired": pairing.expires <= utcnow()}


def register(app: QuartTrio, daemon: WebBackend) -> None:
    @app.get("/api/pairings")
    async def pairings() -> Any:
        state = str_arg("state", max_len=20)
        try:
            wanted = None if state is None else PairingState(state)
        except ValueError:
            raise ApiError(400, "'state' must be pending, approved or denied") from None
        return [pairing_json(p) for p in await daemon.store.pairings(wanted)]

    @app.post("/api/pairings/<code>/approve")
    async def approve(code: str) -> Any:
        try:
            group = await daemon.pairings.approve(code)
        except PairingError as exc:
            raise ApiError(400, str(exc)) from None
        return to_json(group)

    @app.post("/api/pairings/<code>/deny")
    async def deny(code: str) -> Any:
        try:
            return pairing_json(await daemon.pairings.deny(code))
        except PairingError as exc:
            raise ApiError(400, str(exc)) from None
