"""Headless Chromium for the agent's browser tools (browser_tools.py), driven over the DevTools
protocol through ``--remote-debugging-pipe``: Chromium reads commands on its fd 3 and writes answers
and events on its fd 4, each a JSON text ended by a NUL byte. No extra Python package is needed.

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
import fcntl
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .browser_proxy import BrowserProxy
from .settings import say

CHROMIUM = "/usr/bin/chromium"  # Debian's launcher script: whether the image has the browser
# The browser itself, started without the launcher, which would add Debian's Google API keys (and
# with them sign-in traffic), remote extensions and flags of its own.
CHROMIUM_BINARY = "/usr/lib/chromium/chromium"
IDLE_CLOSE = 300.0  # seconds without a browser call before the browser is closed anyway
COMMAND_TIMEOUT = 30.0
LOAD_TIMEOUT = 30.0
START_TIMEOUT = 20.0
MAX_MESSAGE = 64 * 1024 * 1024  # one DevTools message (a full-page screenshot is base64 in one)
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


class BrowserError(Exception):
    """What the agent is told (one line)."""


def encode_message(obj: dict[str, Any]) -> bytes:
    """One DevTools message on the pipe: compact JSON and a NUL byte."""
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    if b"\0" in data:  # JSON escapes control characters, so this cannot happen
        raise ValueError("a DevTools message may not hold a NUL byte")
    return data + b"\0"


class MessageSplitter:
    """Bytes from Chromium's fd 4 -> the JSON messages in them (a message may span reads)."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buf += data
        out: list[dict[str, Any]] = []
        while (end := self.buf.find(b"\0")) >= 0:
            raw = bytes(self.buf[:end])
            del self.buf[: end + 1]
            if raw.strip():
                obj = json.loads(raw)
                if isinstance(obj, dict):
                    out.append(obj)
        if len(self.buf) > self.limit:
            raise BrowserError(f"a DevTools message longer than {self.limit} bytes")
        return out


# Puts the pipe ends on fds 3 and 4 and becomes the browser (subprocess cannot place fds itself, and
# dash's redirections take one-digit fds only).
_EXEC_ON_3_4 = (
    "import os, sys; a, b = int(sys.argv[1]), int(sys.argv[2]); os.dup2(a, 3); os.dup2(b, 4); "
    "os.close(a); os.close(b); os.execv(sys.argv[3], sys.argv[3:])"
)


def _high_fd(fd: int) -> int:
    """``fd`` moved to a number >= 10 (so the child's 3<& / 4>& cannot overwrite it), close-on-exec."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class CdpPipe:
    """A child process that speaks the DevTools protocol on fds 3 (in) and 4 (out)."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.writer: asyncio.WriteTransport | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closed: str | None = None  # why, once the pipe is gone

    async def start(self, argv: list[str], *, stderr: Any = asyncio.subprocess.DEVNULL,
                    env: dict[str, str] | None = None) -> None:  # fmt: skip
        cmd_r, cmd_w = (_high_fd(fd) for fd in os.pipe())  # we write, the child reads on fd 3
        ev_r, ev_w = (_high_fd(fd) for fd in os.pipe())  # the child writes on fd 4, we read
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-S", "-E", "-c", _EXEC_ON_3_4, str(cmd_r), str(ev_w), *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=stderr, pass_fds=(cmd_r, ev_w),
                start_new_session=True, env=env,
            )  # fmt: skip
        finally:
            os.close(cmd_r)
            os.close(ev_w)
        loop = asyncio.get_running_loop()
        os.set_blocking(cmd_w, False)
        self.writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(cmd_w, "wb", buffering=0))
        self.reader = asyncio.create_task(self._read(ev_r), name="cdp-read")

    async def _read(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        splitter = MessageSplitter()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            queue.put_nowait(data)
            if not data:
                loop.remove_reader(fd)

        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        why = "the browser closed its DevTools pipe"
        try:
            while data := await queue.get():
                for msg in splitter.feed(data):
                    self._dispatch(msg)
        except (BrowserError, ValueError) as exc:
            why = f"the browser's DevTools pipe broke: {exc}"
        finally:
            loop.remove_reader(fd)
            os.close(fd)
            self._fail(why)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "id" in msg:
            fut = self.pending.pop(int(msg["id"]), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        for listener in list(self.listeners):
            try:
                listener(msg)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the pipe
                say(f"browser: event listener failed: {exc!r}")

    def _fail(self, why: str) -> None:
        if self.closed is None:
            self.closed = why
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(BrowserError(why))
        self.pending.clear()

    async def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
                   timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:  # fmt: skip
        """Send one command; its ``result`` (BrowserError with Chromium's message on an error)."""
        if self.closed is not None or self.writer is None:
            raise BrowserError(self.closed or "the browser is not running")
        mid = next(self.ids)
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[mid] = fut
        try:
            self.writer.write(encode_message(msg))
            answer = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise BrowserError(f"the browser did not answer {method} within {timeout:g}s") from None
        finally:
            self.pending.pop(mid, None)
        if "error" in answer:
            err = answer["error"]
            text = err.get("message", "error") if isinstance(err, dict) else str(err)
            raise BrowserError(f"{method}: {text}")
        result = answer.get("result")
        return result if isinstance(result, dict) else {}

    async def kill(self) -> None:
        """Kill the child's whole process group and wait for it."""
        self._fail("the browser was closed")
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
        if self.reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.reader, 2)


# -- page scripts (run with Runtime.evaluate; the argument is inlined as JSON) --------------------

READ_JS = """(() => {
  const body = document.body || document.documentElement;
  const controls = [];
  for (const el of document.querySelectorAll('input, textarea, select, button, [role=button]')) {
    if (controls.length >= 40) break;
    const r = el.getBoundingClientRect();
    if ((!r.width && !r.height) || el.type === 'hidden') continue;
    const tag = el.tagName.toLowerCase();
    let sel = tag;
    if (el.id) sel = '#' + CSS.escape(el.id);
    else if (el.name) sel = tag + '[name="' + el.name + '"]';
    const label = (el.labels && el.labels[0] ? el.labels[0].innerText : '') || el.innerText || el.value
      || el.placeholder || el.getAttribute('aria-label') || el.title || '';
    controls.push(sel + (el.type && tag === 'input' ? ' (' + el.type + ')' : '') +
      (label.trim() ? ': ' + label.trim().replace(/\\s+/g, ' ').slice(0, 60) : ''));
  }
  return {title: document.title, url: location.href, text: body ? body.innerText : '', controls};
})()"""

FIND_JS = """((q, mode) => {
  let el = null;
  try { el = document.querySelector(q); } catch (e) {}
  const norm = (s) => (s || '').replace(/\\s+/g, ' ').trim().toLowerCase();
  const want = norm(q);
  if (!el && mode === 'click') {
    const text = (e) => norm(e.innerText || e.value || e.getAttribute('aria-label') || e.title);
    const cands = [...document.querySelectorAll('a, button, input[type=submit], input[type=button], ' +
      'input[type=checkbox], input[type=radio], [role=button], [role=link], [onclick], label, summary')];
    el = cands.find(e => text(e) === want) || cands.find(e => text(e).includes(want)) || null;
    if (!el && want) {
      const all = [...document.body.querySelectorAll('*')].filter(e => norm(e.innerText).includes(want));
      el = all.length ? all[all.length - 1] : null;
    }
  }
  if (!el && mode === 'fill') {
    const fields = [...document.querySelectorAll('input, textarea, select, [contenteditable=true]')];
    const names = (e) => [e.name, e.placeholder, e.getAttribute('aria-label'), e.id,
      e.labels && e.labels[0] ? e.labels[0].innerText : ''].map(norm);
    el = fields.find(e => names(e).includes(want)) || fields.find(e => names(e).some(n => n && n.includes(want))) || null;
  }
  if (!el) return null;
  el.scrollIntoView({block: 'center', inline: 'center'});
  const r = el.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = document.elementFromPoint(x, y);
  const desc = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    ((el.innerText || el.value || '').trim() ? ' "' + (el.innerText || el.value).trim().slice(0, 60) + '"' : '');
  if (mode === 'fill') {
    el.focus();
    if ('value' in el && el.tagName !== 'SELECT') { el.value = ''; }
    else if (el.isContentEditable) { document.execCommand('selectAll', false, null); }
    return {desc, select: el.tagName === 'SELECT', focused: document.activeElement === el};
  }
  const covered = !(hit && (hit === el || el.contains(hit)));
  if (covered) el.click();
  return {desc, x, y, covered};
})"""


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
