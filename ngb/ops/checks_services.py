"""Doctor's checks of the services ngb talks to: the model upstream (reachable, key taken), the
clock (against the upstream's ``Date`` header and the NTP status), and the running daemon's web
server."""

import contextlib
import email.utils
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from ..config import Config
from .check import Check
from .fix_lines import ngb_command

CLOCK_FAIL = 60.0  # seconds of skew against the upstream: TLS, cron tasks and logs go wrong
CLOCK_WARN = 10.0
PROBE_MODEL = "claude-sonnet-4-5"
ANTHROPIC_VERSION = "2023-06-01"


# -- model ---------------------------------------------------------------------------------------------
def _key_fix(config: Config) -> str:
    env_file = (
        config.config_file.parent if config.config_file else Path("~/.config/nanogridbot")
    ) / "ngb.env"
    return (
        f"put ANTHROPIC_API_KEY=... in {env_file} (mode 600, read by the service), or "
        'anthropic_api_key_file = "/path" (mode 600) in ngb.toml; or point NGB_MODEL_UPSTREAM at your gateway'
    )


def check_model(
    config: Config, transport: httpx.BaseTransport | None = None, timeout: float = 10
) -> tuple[Check, float | None]:
    """A free request (token counting) to the upstream: does it answer, does it take the key?
    Returns the check and the upstream's clock (from its Date header) when it answered."""
    upstream = config.model_upstream.rstrip("/")
    key = config.anthropic_api_key
    if not key and "anthropic.com" in upstream:
        return Check("model", "fail", f"no API key for {upstream}", _key_fix(config)), None
    headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
    if key:
        headers["x-api-key"] = key
    body = {"model": PROBE_MODEL, "messages": [{"role": "user", "content": "ping"}]}
    try:
        with httpx.Client(transport=transport, timeout=timeout) as http:
            r = http.post(f"{upstream}/v1/messages/count_tokens", headers=headers, json=body)
    except httpx.TimeoutException:
        return Check(
            "model",
            "fail",
            f"{upstream} did not answer within {timeout:g}s",
            f"curl -sS -m 10 {upstream}/   (check the network, a proxy, or NGB_MODEL_UPSTREAM)",
        ), None
    except httpx.HTTPError as exc:
        return Check(
            "model",
            "fail",
            f"cannot reach {upstream}: {type(exc).__name__}: {str(exc)[:150]}",
            f"curl -sS -m 10 {upstream}/   (check the network, DNS, or NGB_MODEL_UPSTREAM)",
        ), None
    server_time = None
    if r.headers.get("date"):
        with contextlib.suppress(TypeError, ValueError):
            server_time = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
    who = "the key" if key else "the request (no key set)"
    if r.status_code in (401, 403):
        return Check(
            "model", "fail", f"{upstream} refused {who} (HTTP {r.status_code})", _key_fix(config)
        ), server_time
    if r.status_code >= 500:
        return Check(
            "model",
            "warn",
            f"{upstream} answered HTTP {r.status_code} (overloaded or down; retried by the proxy)",
        ), server_time
    note = "" if r.status_code < 400 else f" (HTTP {r.status_code} for the probe; the key was accepted)"
    return Check("model", "ok", f"{upstream} answers and accepts {who}{note}"), server_time


# -- clock -----------------------------------------------------------------------------------------------
def ntp_synchronized() -> bool | None:
    if not Path("/run/systemd/system").is_dir() or shutil.which("timedatectl") is None:
        return None
    try:
        out = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value)


def check_clock(
    server_time: float | None, now: float | None = None, ntp: bool | None = None, floor: float | None = None
) -> Check:
    now = time.time() if now is None else now
    fix = "sudo timedatectl set-ntp true   (or: sudo apt-get install systemd-timesyncd)"
    floor = Path(__file__).stat().st_mtime - 86400 if floor is None else floor
    if now < floor:
        return Check(
            "clock",
            "fail",
            f"the system clock says {time.strftime('%Y-%m-%d %H:%M', time.gmtime(now))} UTC, before this ngb was installed",
            fix,
        )
    if server_time is not None:
        skew = now - server_time
        detail = f"{abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the model upstream's clock"
        if abs(skew) > CLOCK_FAIL:
            return Check("clock", "fail", detail + " (TLS, scheduled tasks and logs go wrong)", fix)
        if abs(skew) > CLOCK_WARN:
            return Check("clock", "warn", detail, fix)
        synced = "" if ntp is None else (", NTP synchronized" if ntp else ", NTP not synchronized")
        return Check("clock", "ok", f"within {CLOCK_WARN:g}s of the upstream's clock{synced}")
    if ntp is False:
        return Check("clock", "warn", "NTP is not synchronized (and no upstream clock to compare with)", fix)
    return Check(
        "clock",
        "ok",
        "plausible" + (" and NTP synchronized" if ntp else " (no upstream clock to compare with)"),
    )


# -- daemon ---------------------------------------------------------------------------------------------
def check_daemon(config: Config, transport: httpx.BaseTransport | None = None) -> Check:
    host = f"[{config.web_host}]" if ":" in config.web_host else config.web_host
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    url = f"http://{host}:{config.web_port}/healthz"
    try:
        with httpx.Client(transport=transport, timeout=3) as http:
            r = http.get(url)
    except httpx.HTTPError:
        return Check("daemon", "ok", f"not running (nothing on {url})")
    try:
        data = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Check(
            "daemon",
            "fail",
            f"something else answers on port {config.web_port} (HTTP {r.status_code})",
            f"sudo ss -ltnp 'sport = :{config.web_port}'   (then stop it, or set web_port)",
        )
    if r.status_code != 200:
        problems = data.get("problems") or data.get("error") or r.text[:200]
        return Check(
            "daemon",
            "fail",
            f"running but unhealthy: {problems}",
            f"journalctl -u nanogridbot -n 100   (or the terminal running `{ngb_command(config)} run`)",
        )
    return Check("daemon", "ok", f"running and healthy at {url}")
