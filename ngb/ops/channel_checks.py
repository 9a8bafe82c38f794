"""`ngb doctor`'s channel checks: is each configured channel's token accepted by its platform?

One check per configured channel, named ``channel NAME``:

- a platform with a cheap "who am I" call is asked directly, with the same settings the daemon
  would use (base URLs included, so a self-hosted gateway or a test fake is asked, not the public
  API): Telegram ``getMe``, Slack ``auth.test`` (bot token) and ``apps.connections.open`` (app
  token), Discord ``GET /users/@me``, Feishu/Lark ``tenant_access_token/internal``, DingTalk's
  OAuth ``accessToken``; email logs in over IMAP and SMTP (ops/email_check.py). A refused token is ``fail`` with the variable to set; an unreachable
  platform is ``fail`` with the URL asked.
- the others keep a connection open rather than answer a request (QQ/OneBot, WeCom's robot
  websocket, the WhatsApp bridge): when the daemon runs, its /status says whether the platform
  took the token (``unauthorized`` is a failure); when it does not, the check says what it could
  see (WhatsApp: Node and the bridge installed, paired or not) and ``skip`` for the rest.
- a channel table that the daemon would refuse (bad key, bad value) or that is missing its token
  (state ``off``) fails, with the line to fix.

No secret is printed: tokens are redacted from every detail text.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ..config import CHANNEL_SECRET_ENV, Config, ConfigError, parse_bool
from .check import Check
from .email_check import probe_email
from .matrix_check import probe_matrix

# Channels whose token variables are not in config.CHANNEL_SECRET_ENV (they read their own).
_OTHER_TOKEN_ENV = {
    "qq": "NGB_ONEBOT_ACCESS_TOKEN",
    "wecom": "NGB_WECOM_BOT_ID and NGB_WECOM_SECRET (robot mode) or NGB_WECOM_CORP_SECRET (callback mode)",
}


def _token_vars(name: str) -> str:
    keys = CHANNEL_SECRET_ENV.get(name)
    if keys:
        return " and ".join(keys.values())
    return _OTHER_TOKEN_ENV.get(name, f"the {name} token variable")


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def _env_file(config: Config) -> Path:
    return (config.config_file.parent if config.config_file else Path("~/.config/nanogridbot")) / "ngb.env"


def _token_fix(config: Config, name: str) -> str:
    keys = CHANNEL_SECRET_ENV.get(name)
    assignments = " and ".join(f"{var}=..." for var in keys.values()) if keys else _token_vars(name)
    return (f"put {assignments} in {_env_file(config)} (mode 600, read by the service), "
            f"then restart the daemon; see docs/channels/{name}.md")


def _refused(config: Config, name: str, what: str) -> Check:
    return Check(f"channel {name}", "fail", what, _token_fix(config, name))


def _unreachable(name: str, url: str, exc: Exception, secrets: list[str]) -> Check:
    detail = _redact(f"cannot reach {url}: {type(exc).__name__}: {str(exc)[:150]}", secrets)
    return Check(f"channel {name}", "fail", detail, f"curl -sS -m 10 {_redact(url, secrets)}   (check the network, a proxy, or the channel's base URL)")


def _json(r: httpx.Response) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        data = r.json()
        if isinstance(data, dict):
            return data
    return {}


# -- the probes: one request each, with the settings the daemon would use ---------------------------------
def probe_telegram(config: Config, settings: Any, http: httpx.Client) -> Check:
    token = settings.token or ""
    base = settings.base_url
    url = base.replace("{token}", token) + "/getMe" if "{token}" in base else f"{base}{token}/getMe"
    shown = url.replace(token, "<token>")
    try:
        r = http.get(url)
    except httpx.HTTPError as exc:
        return _unreachable("telegram", shown, exc, [token])
    data = _json(r)
    if r.status_code in (401, 404) or (r.status_code == 200 and not data.get("ok")):
        return _refused(config, "telegram", f"Telegram refused the token (HTTP {r.status_code}: {data.get('description', '')})")
    if r.status_code != 200:
        return _retrying("telegram", shown, r.status_code)
    me = data.get("result") or {}
    return Check("channel telegram", "ok", f"token accepted: @{me.get('username', '?')}")


def _slack_call(http: httpx.Client, base: str, method: str, token: str) -> tuple[int, dict[str, Any]]:
    r = http.post(f"{base}{method}", headers={"Authorization": f"Bearer {token}"})
    return r.status_code, _json(r)


def probe_slack(config: Config, settings: Any, http: httpx.Client) -> Check:
    secrets = [settings.bot_token or "", settings.app_token or ""]
    base = settings.base_url
    try:
        status, bot = _slack_call(http, base, "auth.test", settings.bot_token or "")
        if status == 200 and bot.get("ok"):
            status_app, app = _slack_call(http, base, "apps.connections.open", settings.app_token or "")
        else:
            status_app, app = 0, {}
    except httpx.HTTPError as exc:
        return _unreachable("slack", base, exc, secrets)
    if status != 200 or not bot.get("ok"):
        why = bot.get("error") or f"HTTP {status}"
        return _refused(config, "slack", f"Slack refused the bot token ({why})")
    if status_app != 200 or not app.get("ok"):
        why = app.get("error") or f"HTTP {status_app}"
        return _refused(config, "slack", f"Slack refused the app-level token ({why}; it needs connections:write)")
    return Check("channel slack", "ok", f"bot and app tokens accepted: {bot.get('user', '?')} in {bot.get('team', '?')}")


def probe_discord(config: Config, settings: Any, http: httpx.Client) -> Check:
    token = settings.token or ""
    url = f"{settings.api_base}/users/@me"
    try:
        r = http.get(url, headers={"Authorization": f"Bot {token}"})
    except httpx.HTTPError as exc:
        return _unreachable("discord", url, exc, [token])
    if r.status_code in (401, 403):
        return _refused(config, "discord", f"Discord refused the bot token (HTTP {r.status_code})")
    if r.status_code != 200:
        return _retrying("discord", url, r.status_code)
    me = _json(r)
    return Check("channel discord", "ok", f"token accepted: {me.get('username', '?')}")


def _retrying(name: str, url: str, status: int) -> Check:
    return Check(f"channel {name}", "warn", f"{url} answered HTTP {status}; the daemon retries")


def _token_exchange(
    config: Config,
    name: str,
    url: str,
    secret: str,
    send: Callable[[], httpx.Response],
    *,
    accepted: Callable[[dict[str, Any]], bool],
    ok: str,
    error_keys: tuple[str, ...],
    refused: Callable[[dict[str, Any], str], str],
) -> Check:
    """A platform that trades an app's credential for an access token: `send` asks at `url`; an
    HTTP 200 whose body is `accepted` is ok, a 5xx a warning, anything else refused, the reason
    (`refused(body, why)`) taken from the first of the body's `error_keys` that is set."""
    try:
        r = send()
    except httpx.HTTPError as exc:
        return _unreachable(name, url, exc, [secret])
    data = _json(r)
    if r.status_code == 200 and accepted(data):
        return Check(f"channel {name}", "ok", ok)
    if r.status_code >= 500:
        return _retrying(name, url, r.status_code)
    why = next((data[key] for key in error_keys if data.get(key)), None) or f"HTTP {r.status_code}"
    return _refused(config, name, refused(data, _redact(str(why), [secret])))


def probe_lark(config: Config, settings: Any, http: httpx.Client) -> Check:
    app_id, secret = getattr(settings, "app_id", "") or "", getattr(settings, "app_secret", "") or ""
    domain = str(getattr(settings, "domain", "") or "").rstrip("/")
    url = f"{domain}/open-apis/auth/v3/tenant_access_token/internal"
    return _token_exchange(
        config, "lark", url, secret,
        lambda: http.post(url, json={"app_id": app_id, "app_secret": secret}),
        accepted=lambda data: data.get("code") == 0 and bool(data.get("tenant_access_token")),
        ok=f"app {app_id} accepted by {domain}",
        error_keys=("msg",),
        refused=lambda data, why: f"{domain} refused app {app_id} (code {data.get('code')}: {why})",
    )


def probe_dingtalk(config: Config, settings: Any, http: httpx.Client) -> Check:
    client_id = getattr(settings, "client_id", "") or ""
    secret = getattr(settings, "client_secret", "") or ""
    base = str(getattr(settings, "api_base", "") or "").rstrip("/")
    url = f"{base}/v1.0/oauth2/accessToken"
    return _token_exchange(
        config, "dingtalk", url, secret,
        lambda: http.post(url, json={"appKey": client_id, "appSecret": secret}),
        accepted=lambda data: bool(data.get("accessToken")),
        ok=f"client {client_id} accepted by {base}",
        error_keys=("message", "code"),
        refused=lambda data, why: f"DingTalk refused client {client_id} ({why})",
    )


def probe_wecom_callback(config: Config, settings: Any, http: httpx.Client) -> Check:
    secret = settings.corp_secret or ""
    base = str(settings.api_base).rstrip("/")
    url = f"{base}/cgi-bin/gettoken"
    return _token_exchange(
        config, "wecom", url, secret,
        lambda: http.get(url, params={"corpid": settings.corp_id, "corpsecret": secret}),
        accepted=lambda data: data.get("errcode") == 0 and bool(data.get("access_token")),
        ok=f"app secret accepted for corp {settings.corp_id} (callback mode)",
        error_keys=("errmsg",),
        refused=lambda data, why: f"WeCom refused corp {settings.corp_id}'s app secret (errcode {data.get('errcode')}: {why})",
    )


PROBES: dict[str, Callable[[Config, Any, httpx.Client], Check]] = {
    "telegram": probe_telegram,
    "slack": probe_slack,
    "discord": probe_discord,
    "lark": probe_lark,
    "dingtalk": probe_dingtalk,
    "email": probe_email,
    "matrix": probe_matrix,
}


# -- channels without a request to ask -------------------------------------------------------------------
def _whatsapp_local(config: Config, channel: Any) -> Check | None:
    s = channel.settings
    if getattr(s, "manage_bridge", True):
        from ..channels.whatsapp import NODE_MIN, node_version

        if shutil.which(s.node) is None or not node_version(s.node):
            return Check("channel whatsapp", "fail",
                         f"no usable Node.js (>= {NODE_MIN}, able to require() ES modules) at {s.node}; the bridge cannot start",
                         "bash scripts/setup.sh   (installs a Node into the venv when the system's is too old)")
        if not (Path(s.bridge_dir) / "node_modules").is_dir():
            return Check("channel whatsapp", "fail", f"the bridge's packages are not installed in {s.bridge_dir}",
                         f"bash {Path(s.bridge_dir) / 'install.sh'}")
    creds = Path(s.state_dir) / "auth" / "creds.json"
    if not creds.is_file():
        return Check("channel whatsapp", "warn", "not paired yet",
                     "start the daemon (`ngb run`) and scan the QR code it shows (terminal or dashboard) with WhatsApp > Linked devices")
    return None


def _from_daemon(name: str, state: str | None, config: Config) -> Check:
    if state is None:
        return Check(f"channel {name}", "skip", "the daemon is not running: its token is checked when it connects (see /status)")
    if state == "unauthorized":
        return _refused(config, name, "the daemon's connection was refused by the platform (state unauthorized)")
    if state == "connected":
        return Check(f"channel {name}", "ok", "connected (the daemon's /status)")
    return Check(f"channel {name}", "warn", f"state {state} in the daemon's /status (reconnecting, or still starting)")


def daemon_channel_states(config: Config, transport: httpx.BaseTransport | None = None) -> dict[str, str] | None:
    """The running daemon's channel states from /status, or None when it does not answer."""
    host = f"[{config.web_host}]" if ":" in config.web_host else config.web_host
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    from ..api_token import TokenUnavailable, client_token

    try:  # the configured token, else the one the daemon generated into its state dir
        headers = {"Authorization": f"Bearer {client_token(config)}"}
    except TokenUnavailable:
        headers = {}
    try:
        with httpx.Client(transport=transport, timeout=3) as http:
            r = http.get(f"http://{host}:{config.web_port}/status", headers=headers)
    except httpx.HTTPError:
        return None
    data = _json(r)
    channels = data.get("channels")
    if r.status_code != 200 or not isinstance(channels, dict):
        return None
    return {str(k): str(v.get("state") if isinstance(v, dict) else v) for k, v in channels.items()}


def _configured_tables(config: Config) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, table in (getattr(config, "channels", {}) or {}).items():
        if not isinstance(table, dict):
            continue
        with contextlib.suppress(ValueError):
            if not parse_bool(table.get("enabled", True)):
                continue
        out[name] = table
    return out


def check_channels(
    config: Config,
    transport: httpx.BaseTransport | None = None,
    web_transport: httpx.BaseTransport | None = None,
    timeout: float = 10,
    offline: bool = False,
) -> list[Check]:
    """One check per configured channel (none when only the local chat is on)."""
    from ..channels import build_channels

    quiet = logging.getLogger("ngb.channels")  # its "off (...)" lines are this check's own findings
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        channels = build_channels(config)
    except ConfigError as exc:
        where = config.config_file or "ngb.toml"
        return [Check("channels", "fail", str(exc), f"edit {where} (see docs/channels/)")]
    finally:
        quiet.setLevel(level)
    checks: list[Check] = []
    tables = _configured_tables(config)
    for name in sorted(tables):  # a table's name is its channel's chat prefix ([channels.qq] -> qq:...)
        if name not in channels:
            checks.append(Check(f"channel {name}", "fail", "configured but off (token or address missing; the daemon logs why at start)",
                                _token_fix(config, name)))
    states: dict[str, str] | None = None
    asked_daemon = False
    with httpx.Client(transport=transport, timeout=timeout) as http:
        for name, channel in channels.items():
            if name == "local":
                continue
            settings = getattr(channel, "settings", None)
            off_of = getattr(channel, "off_reason", None)  # the channel's word (a kept login counts)
            off = off_of() if callable(off_of) else getattr(settings, "off_reason", None)
            if off:
                checks.append(Check(f"channel {name}", "fail", f"off: {off}", _token_fix(config, name)))
                continue
            probe = PROBES.get(name)
            if name == "wecom" and hasattr(settings, "corp_secret"):
                probe = probe_wecom_callback  # callback mode answers requests; robot mode keeps a socket
            if probe is not None and settings is not None:
                if offline:
                    checks.append(Check(f"channel {name}", "skip", "--offline: not asked"))
                else:
                    checks.append(probe(config, settings, http))
                continue
            if name == "whatsapp":
                local = _whatsapp_local(config, channel)
                if local is not None:
                    checks.append(local)
                    continue
            if not asked_daemon:
                states, asked_daemon = daemon_channel_states(config, web_transport), True
            checks.append(_from_daemon(name, None if states is None else states.get(name), config))
    return checks
