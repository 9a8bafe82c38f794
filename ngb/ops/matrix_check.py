"""`ngb doctor`'s check of the Matrix channel: the homeserver answers, it takes the bot's access token
(``whoami``: which user and device), and end-to-end encryption is available when it is asked for.
The token is never printed."""

from __future__ import annotations

from typing import Any

import httpx

from ..channels.matrix_crypto import encryption_available
from ..channels.matrix_login import read_login
from .check import Check

NAME = "channel matrix"


def probe_matrix(config: Any, settings: Any, http: httpx.Client) -> Check:
    stored = read_login(getattr(config, "state_dir", None), settings.homeserver, settings.user_id)
    token = settings.access_token or (stored.access_token if stored is not None else "")
    fix = (f"check [channels.matrix] homeserver and NGB_MATRIX_ACCESS_TOKEN (or user_id and NGB_MATRIX_PASSWORD); "
           f"see docs/channels/matrix.md ({config.config_file or 'ngb.toml'})")
    if not token:
        # a login makes a new device: the daemon does it once, not the check
        return Check(NAME, "warn", f"not logged in yet: the daemon logs in as {settings.user_id} with the password "
                                   "at its first start and keeps the token", "start the daemon once")
    url = f"{settings.homeserver}/_matrix/client/v3/account/whoami"
    try:
        r = http.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return Check(NAME, "fail", f"cannot reach {url}: {type(exc).__name__}: {str(exc)[:150]}".replace(token, "***"), fix)
    try:
        data = r.json() if r.content else {}
    except ValueError:
        data = {}
    if r.status_code in (401, 403):
        which = "access token" if settings.access_token else "stored login (the daemon logs in again with the password)"
        return Check(NAME, "fail", f"the homeserver refused the {which} ({data.get('errcode', r.status_code)}: "
                                   f"{data.get('error', '')})", fix)
    if r.status_code != 200 or not isinstance(data, dict) or "user_id" not in data:
        return Check(NAME, "fail", f"{url} answered HTTP {r.status_code}: not a Matrix homeserver's client API?", fix)
    who = f"token accepted: {data['user_id']} (device {data.get('device_id') or '?'})"
    if settings.encryption:
        why = encryption_available()
        if why is not None:
            return Check(NAME, "warn", f"{who}; end-to-end encryption is off: {why}",
                         "pip install 'matrix-nio[e2e]' (scripts/setup.sh installs it), or set encryption = false")
        return Check(NAME, "ok", f"{who}; end-to-end encryption on")
    return Check(NAME, "ok", f"{who}; end-to-end encryption off (encryption = false): encrypted rooms are not read")
