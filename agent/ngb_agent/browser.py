"""Headless Chromium for the agent's browser tools (browser_tools.py), driven over the DevTools
protocol through ``--remote-debugging-pipe`` (cdp_pipe.py).

Chromium runs ``--no-sandbox``: its own sandbox needs user namespaces or a setuid helper, which
the agent container (all capabilities dropped, no-new-privileges, seccomp) does not give. The
container is the sandbox: a page that broke out of the renderer would find what the agent already
has, a read-only image, the group's folder and no network. Its only way out is the egress door:
``--proxy-server`` names a small local proxy (browser_proxy.py: it keeps Chromium's own background
requests in the container) in front of the runner's web forwarder (127.0.0.1:NGB_WEB_PORT), and
``--proxy-bypass-list=<-loopback>`` sends even localhost through it, so the door's rules decide
every request (docs/web-browser.md).

One browser per runner, started on the first browser tool call, closed at the end of the turn
(the CLI's Stop hook) or after ``IDLE_CLOSE`` seconds without a browser call; it is killed with
its whole process group and its throwaway profile under /tmp is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .browser_proxy import BrowserProxy
from .browser_scripts import FIND_JS, READ_JS
from .cdp_pipe import COMMAND_TIMEOUT, BrowserError, CdpPipe
from .settings import say

CHROMIUM = "/usr/bin/chromium"  # Debian's launcher script: whether the image has the browser
# The browser itself, started without the launcher, which would add Debian's Google API keys (and
# with them sign-in traffic), remote extensions and flags of its own.
CHROMIUM_BINARY = "/usr/lib/chromium/chromium"
IDLE_CLOSE = 300.0  # seconds without a browser call before the browser is closed anyway
LOAD_TIMEOUT = 30.0
START_TIMEOUT = 20.0
TEXT_LIMIT = 20_000  # characters of page text per answer
VIEWPORT = (1280, 900)

NO_BROWSER = "this image has no browser (Chromium was not added when the agent image was built: see `ngb image build`)"
NO_WEB = "web access is off for this group (the daemon gave this container no egress door)"

# Chromium's own traffic (updates, metrics, sync, safe browsing...) is switched off: the door
# would refuse or log it, and none of it is the agent's.
FLAGS = [
    "--headless=new",
    "--no-sandbox",  # the container is the sandbox (see the module's docstring)
    "--remote-debugging-pipe",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-zygote",  # fewer processes against the container's pids limit (needs --no-sandbox)
    "--disable-gpu",
    "--disable-extensions",
    "--disable-component-extensions-with-background-pages",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,NetworkTimeServiceQuerying,"
    "CertificateTransparencyComponentUpdater,AutofillServerCommunication,InterestFeedContentSuggestions,"
    "LensOverlay,HttpsUpgrades",
    "--disable-field-trial-config",
    "--metrics-recording-only",
    "--no-pings",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--disk-cache-size=33554432",
    "--renderer-process-limit=2",
    f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
]


class Browser:
    """One headless Chromium, started when first needed (``page``), closed by ``close``."""

    def __init__(self, web_port: int, workdir: Path, executable: str = CHROMIUM) -> None:
        self.web_port = web_port
        self.workdir = workdir  # the group's folder (screenshots go under it)
        self.executable = executable
        self.pipe: CdpPipe | None = None
        self.session: str | None = None
        self.tmp: Path | None = None
        self.lock = asyncio.Lock()
        self.idle: asyncio.TimerHandle | None = None
        self.doc_responses: dict[str, dict[str, Any]] = {}  # loaderId -> the document's response
        self.started_at = 0.0
        self.proxy: BrowserProxy | None = None  # Chromium's background hosts stay inside (browser_proxy.py)

    # -- lifecycle --------------------------------------------------------------------------

    def unavailable(self) -> str | None:
        if not (os.path.isfile(self.executable) and os.access(self.executable, os.X_OK)):
            return NO_BROWSER
        if not self.web_port:
            return NO_WEB
        return None

    @property
    def running(self) -> bool:
        return self.pipe is not None and self.pipe.closed is None

    async def _start(self) -> None:
        why = self.unavailable()
        if why:
            raise BrowserError(why)
        started = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="ngb-browser-", dir="/tmp"))
        profile = self.tmp / "profile"
        profile.mkdir()
        binary = CHROMIUM_BINARY if self.executable == CHROMIUM and os.access(CHROMIUM_BINARY, os.X_OK) else self.executable
        self.proxy = BrowserProxy(self.web_port)
        proxy_port = await self.proxy.start()
        argv = [
            binary, *FLAGS, f"--user-data-dir={profile}", f"--crash-dumps-dir={self.tmp}",
            f"--proxy-server=http://127.0.0.1:{proxy_port}",
            # "<-loopback>" takes loopback off Chromium's built-in bypass list: localhost too goes
            # through the door (which refuses it unless the operator allowed it).
            "--proxy-bypass-list=<-loopback>", "about:blank",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
        env.setdefault("HOME", str(self.tmp))
        env["XDG_CONFIG_HOME"] = env["XDG_CACHE_HOME"] = str(self.tmp)
        self.pipe = CdpPipe()
        self.pipe.listeners.append(self._on_event)
        log = open(self.tmp / "chromium.log", "wb")  # noqa: SIM115, ASYNC230 - on /tmp (tmpfs); the child keeps it
        try:
            await self.pipe.start(argv, stderr=log, env=env)
        except OSError as exc:
            await self.close()
            raise BrowserError(f"the browser did not start: {exc}") from exc
        finally:
            log.close()
        try:
            targets = await self.pipe.send("Target.getTargets", timeout=START_TIMEOUT)
            pages = [t for t in targets.get("targetInfos", []) if t.get("type") == "page"]
            if pages:
                target = pages[0]["targetId"]
            else:
                target = (await self.pipe.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
            attached = await self.pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})
            self.session = str(attached["sessionId"])
            for method in ("Page.enable", "Network.enable", "Runtime.enable"):
                await self.cmd(method)
            await self.cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False},
            )
        except (BrowserError, KeyError) as exc:
            tail = self._log_tail()
            await self.close()
            raise BrowserError(f"the browser did not start: {exc}{tail}") from None
        self.started_at = time.monotonic()
        say(f"browser: started in {self.started_at - started:.2f}s (pid {self.pid})")

    @property
    def pid(self) -> int | None:
        return self.pipe.proc.pid if self.pipe is not None and self.pipe.proc is not None else None

    def _log_tail(self) -> str:
        if self.tmp is None:
            return ""
        try:
            lines = (self.tmp / "chromium.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        lines = [line for line in lines if "dbus" not in line.lower()]
        return f" ({lines[-1][:300]})" if lines else ""

    async def close(self) -> None:
        """Kill the browser (its process group) and delete its profile; a no-op when not running."""
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        pipe, self.pipe, self.session = self.pipe, None, None
        if pipe is not None:
            await pipe.kill()
            say("browser: closed")
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            await proxy.close()
        tmp, self.tmp = self.tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        self.doc_responses.clear()

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(IDLE_CLOSE, lambda: asyncio.ensure_future(self.close()))

    async def cmd(self, method: str, params: dict[str, Any] | None = None, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        assert self.pipe is not None
        return await self.pipe.send(method, params, session=self.session, timeout=timeout)

    def _on_event(self, msg: dict[str, Any]) -> None:
        if msg.get("method") == "Network.responseReceived":
            params = msg.get("params") or {}
            if params.get("type") == "Document" and params.get("loaderId"):
                self.doc_responses[str(params["loaderId"])] = params.get("response") or {}
                if len(self.doc_responses) > 50:
                    self.doc_responses.pop(next(iter(self.doc_responses)))

    async def run(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` (a coroutine function) with the browser up, one action at a time."""
        async with self.lock:
            if not self.running:
                await self.close()  # a browser that died: its leftovers
                await self._start()
            try:
                return await action()
            finally:
                self._arm_idle()

    # -- pages ------------------------------------------------------------------------------

    async def evaluate(self, expression: str, timeout: float = COMMAND_TIMEOUT) -> Any:
        res = await self.cmd(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, timeout
        )
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text") or "error"
            raise BrowserError(f"the page's script failed: {str(text).splitlines()[0][:200]}")
        return (res.get("result") or {}).get("value")

    async def wait_loaded(self, timeout: float = LOAD_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(BrowserError):
                if await self.evaluate("document.readyState", timeout=5) == "complete":
                    return
            await asyncio.sleep(0.1)

    async def open(self, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BrowserError(f"not an http(s) address: {url[:200]!r}")
        nav = await self.cmd("Page.navigate", {"url": url}, timeout=LOAD_TIMEOUT)
        error = nav.get("errorText")
        if error:
            raise BrowserError(await self.explain(url, str(error)))
        await self.wait_loaded()
        response = self.doc_responses.get(str(nav.get("loaderId") or ""), {})
        headers = {str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()}
        if headers.get("x-ngb-web") == "refused":  # plain HTTP: the door answered in the site's place
            reason = str(response.get("statusText") or "").strip()
            if not reason.startswith("web:"):
                body = str(await self.evaluate("document.body ? document.body.innerText : ''") or "")
                reason = body.strip().splitlines()[0] if body.strip() else f"refused ({response.get('status')})"
            raise BrowserError(f"the egress door refused {url[:200]}: {reason[:300]}")
        page = await self.read()
        page["status"] = response.get("status")
        return dict(page)

    async def explain(self, url: str, error: str) -> str:
        """A failed navigation in words: for a tunnel the door refused, its rule (Chromium keeps only
        net::ERR_TUNNEL_CONNECTION_FAILED): as the browser's proxy saw it, else asked again with a
        plain CONNECT."""
        base = f"opening {url[:200]} failed: {error}"
        if "TUNNEL_CONNECTION_FAILED" not in error and "PROXY" not in error:
            return base
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        rule = self.proxy.refusals.get(target.lower()) if self.proxy is not None else None
        if rule is not None:  # the door's answer to Chromium's own CONNECT, kept by browser_proxy.py
            return f"the egress door refused {target}: {rule}"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.web_port), 5)
        except (OSError, TimeoutError) as exc:
            return f"{base} (the local proxy 127.0.0.1:{self.web_port} is not reachable: {exc})"
        try:
            writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return base
        finally:
            writer.close()
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        code, _, reason = status.partition(" ")[2].partition(" ")
        if code == "200":
            return base + " (the door lets this address through now; the site itself failed)"
        if reason.startswith("web:"):
            return f"the egress door refused {target}: {reason.strip()[:300]}"
        return f"{base} (the proxy answered {status[:200]})"

    async def read(self) -> dict[str, Any]:
        page = await self.evaluate(READ_JS)
        return dict(page) if isinstance(page, dict) else {"title": "", "url": "", "text": "", "controls": []}

    async def click(self, target: str) -> str:
        found = await self.evaluate(f"({FIND_JS})({json.dumps(target)}, 'click')")
        if not found:
            raise BrowserError(f"nothing on the page matches {target[:200]!r} (a CSS selector or the visible text)")
        if not found.get("covered"):
            x, y = float(found["x"]), float(found["y"])
            await self.cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
            for kind in ("mousePressed", "mouseReleased"):
                await self.cmd("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})
        await asyncio.sleep(0.3)  # a click that navigates starts the load meanwhile
        await self.wait_loaded()
        return str(found.get("desc") or target)

    async def fill(self, target: str, text: str, submit: bool) -> str:
        found = await self.evaluate(f"({FIND_JS})({json.dumps(target)}, 'fill')")
        if not found:
            raise BrowserError(f"no field on the page matches {target[:200]!r} (a CSS selector, its name, label or placeholder)")
        if found.get("select"):
            ok = await self.evaluate(
                f"(() => {{ const el = document.activeElement; const want = {json.dumps(text)};"
                " const opt = [...el.options].find(o => o.value === want || o.text.trim() === want);"
                " if (!opt) return false; el.value = opt.value;"
                " el.dispatchEvent(new Event('input', {bubbles: true}));"
                " el.dispatchEvent(new Event('change', {bubbles: true})); return true; })()"
            )
            if not ok:
                raise BrowserError(f"the list {found.get('desc')} has no option {text[:100]!r}")
        else:
            await self.cmd("Input.insertText", {"text": text})
            await self.evaluate(
                "document.activeElement && document.activeElement.dispatchEvent(new Event('change', {bubbles: true}))"
            )
        if submit:
            for kind in ("keyDown", "keyUp"):
                params: dict[str, Any] = {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
                if kind == "keyDown":
                    params["text"] = "\r"
                await self.cmd("Input.dispatchKeyEvent", params)
            await asyncio.sleep(0.3)
            await self.wait_loaded()
        return str(found.get("desc") or target)

    async def scroll(self, direction: str, pixels: int | None) -> dict[str, Any]:
        step = int(pixels) if pixels else int(VIEWPORT[1] * 0.8)
        script = {
            "down": f"window.scrollBy(0, {step})",
            "up": f"window.scrollBy(0, {-step})",
            "top": "window.scrollTo(0, 0)",
            "bottom": "window.scrollTo(0, document.documentElement.scrollHeight)",
        }.get(direction)
        if script is None:
            raise BrowserError(f"direction must be up, down, top or bottom, not {direction[:40]!r}")
        pos = await self.evaluate(
            f"(() => {{ {script}; const d = document.documentElement;"
            " const vis = [...document.body.querySelectorAll('p, li, h1, h2, h3, h4, td, a, button, label, span, div')]"
            ".filter(e => { const r = e.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight"
            " && e.children.length === 0 && e.innerText && e.innerText.trim(); })"
            ".map(e => e.innerText.trim()).join('\\n');"
            " return {y: Math.round(scrollY), height: d.scrollHeight, view: innerHeight, visible: vis}; })()"
        )
        return dict(pos) if isinstance(pos, dict) else {}

    async def screenshot(self, dest: Path, full_page: bool) -> int:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.cmd("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
            width = min(int(size.get("width") or VIEWPORT[0]), 4000)
            height = min(int(size.get("height") or VIEWPORT[1]), 16000)
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        shot = await self.cmd("Page.captureScreenshot", params, timeout=60)
        import base64

        data = base64.b64decode(shot.get("data") or "")
        if not data.startswith(b"\x89PNG"):
            raise BrowserError("the browser returned no PNG")
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return len(data)
