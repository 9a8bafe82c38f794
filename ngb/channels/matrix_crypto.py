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
