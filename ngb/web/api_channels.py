"""Channels: their state, and the pairing QR code of a channel that is waiting to be paired.

    GET /api/channels                  name -> {state, last_error, connected_since, ..., pairing}
    GET /api/channels/<name>/qr.svg    the QR code to scan while the channel pairs (WhatsApp:
                                       Linked devices > Link a device); 404 when it is not pairing

While it is shown, the QR code decides which WhatsApp account this daemon will speak as: whoever
scans it first links theirs. So it is served under /api (the API token rule applies, as for every
/api route) and never cached.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from quart import Response
from quart_trio import QuartTrio

from ..channels.base import Pairing, offers
from .common import ApiError

if TYPE_CHECKING:
    from .backend import WebBackend

QR_SCALE = 6  # pixels per module: a 2@... WhatsApp payload is ~60 modules, ~400 px square


def qr_svg(payload: str) -> bytes:
    """An SVG image of a QR code holding payload (low error correction, as WhatsApp's own page)."""
    import segno  # only when a QR is asked for

    out = io.BytesIO()
    segno.make(payload, error="l", micro=False).save(out, kind="svg", scale=QR_SCALE, border=4,
                                                     xmldecl=False, title="Scan with WhatsApp: Linked devices")
    return out.getvalue()


def channel_json(channel: Any) -> dict[str, Any]:
    status = getattr(channel, "status", None)
    describe = getattr(status, "describe", None)
    try:
        data: dict[str, Any] = dict(describe()) if callable(describe) else {}
    except Exception as exc:  # noqa: BLE001 - a plugin channel's bug must not take /status down
        data = {"last_error": f"describe() failed: {type(exc).__name__}: {exc}"}
    data["state"] = getattr(channel, "state", data.get("state", "unknown"))
    data["pairing"] = offers(channel, Pairing) and bool(channel.qr)
    return data


def register(app: QuartTrio, daemon: WebBackend) -> None:
    @app.get("/api/channels")
    async def list_channels() -> Any:
        return {name: channel_json(c) for name, c in daemon.channels.items()}

    @app.get("/api/channels/<name>/qr.svg")
    async def channel_qr(name: str) -> Any:
        channel = daemon.channels.get(name)
        if channel is None:
            raise ApiError(404, f"no channel {name!r}")
        payload = channel.qr if offers(channel, Pairing) else None
        if not payload:
            raise ApiError(404, f"channel {name} is not waiting to be paired (state {channel.state})")
        return Response(qr_svg(str(payload)), mimetype="image/svg+xml",
                        headers={"Cache-Control": "no-store", "X-QR-State": channel.state})
