"""End-to-end encryption for the Matrix channel: matrix-nio's Olm/Megolm machine (vodozemac),
its store kept under the daemon's secrets dir (``<state>/secrets/matrix/``, mode 0700), the store's
pickle key a secret file beside it (0600, made once, never logged).

The bot's device is the one its access token belongs to (``whoami``), so the store keeps working
across restarts as long as the token does. Trust: the bot encrypts to every device of the room's
members, verified or not (``ignore_unverified_devices``): trust on first use, as most bots do;
docs/channels/matrix.md says what that means. Where the crypto library cannot be imported, the
channel says so at start (and ``ngb doctor`` does), and encrypted rooms cannot be read."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

STORE_DIR = Path("secrets") / "matrix"  # under the daemon's state dir
PICKLE_KEY_FILE = "pickle-key"


def encryption_available() -> str | None:
    """None when nio can encrypt here, else why not."""
    try:
        from nio.crypto import ENCRYPTION_ENABLED
    except ImportError as exc:  # pragma: no cover - nio itself is a dependency
        return f"matrix-nio is not installed ({exc})"
    if not ENCRYPTION_ENABLED:
        return "matrix-nio's end-to-end encryption extra (vodozemac) is not installed: encrypted rooms cannot be read"
    return None


def store_dir(state_dir: Path) -> Path:
    """The crypto store's folder, made private (0700) if missing."""
    folder = state_dir / STORE_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir / "secrets", 0o700)
    os.chmod(folder, 0o700)
    return folder


def pickle_key(folder: Path) -> str:
    """The key the store's sessions are pickled with: made once (0600), then read."""
    path = folder / PICKLE_KEY_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    return key


async def send_encrypted(client: Any, room_id: str, event_type: str, content: dict[str, Any]) -> str:
    """Send an event encrypted into the room, on the asyncio loop; its event id. For the types
    ``room_send`` leaves in the clear: matrix-nio sends ``m.reaction`` unencrypted even in an
    encrypted room (its code predates encrypted reactions); Matrix clients encrypt them, the
    ``m.relates_to`` copied outside so the server can group them (nio's ``encrypt`` does that).
    ConnectionError with the server's error code when it refuses."""
    import uuid

    from nio import Api

    room = client.rooms[room_id]
    if not room.members_synced:
        await client.joined_members(room_id)
    if client.should_query_keys:
        await client.keys_query()
    if client.olm.should_share_group_session(room_id):
        await client.share_group_session(room_id, ignore_unverified_devices=True)
    kind, body = client.encrypt(room_id, event_type, content)
    method, path, data = Api.room_send(client.access_token, room_id, kind, body, uuid.uuid4())
    response = await client.send(method, path, data, headers={"Content-Type": "application/json"})
    async with response:
        answer = await response.json(content_type=None)
        if response.status != 200 or not isinstance(answer, dict) or "event_id" not in answer:
            code = answer.get("errcode", response.status) if isinstance(answer, dict) else response.status
            raise ConnectionError(f"room_send: {code} {answer.get('error', '') if isinstance(answer, dict) else ''}")
    return str(answer["event_id"])
