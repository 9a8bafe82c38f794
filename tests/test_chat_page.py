"""Drive the local chat page (ngb/web/static/chat.html) in headless Chromium.

The page is served by the fake daemon of tests/test_chat_client.py; Chromium is driven over
the DevTools protocol (trio-websocket), no selenium needed. Needs the Debian package
``chromium`` (scripts/test.sh installs it).

Set NGB_CHAT_SCREENSHOT=/some/file.png to keep a screenshot of a short conversation.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

try:
    from test_chat_client import FakeDaemon, png, serve_fake
except ImportError:  # tests/ became a package
    from tests.test_chat_client import FakeDaemon, png, serve_fake

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.browser  # every test here drives the real page in headless Chromium

WIDTH, HEIGHT = 1180, 760


class CDPError(Exception):
    pass


class Page:
    """Just enough of the Chrome DevTools protocol for these tests (one page, flat session)."""

    def __init__(self, ws, session_id: str):
        self.ws = ws
        self.session_id = session_id
        self._next = 0
        self._waiting: dict[int, trio.MemorySendChannel] = {}
        self.errors: list[str] = []

    async def reader(self) -> None:
        while True:
            msg = json.loads(await self.ws.get_message())
            if "id" in msg and msg["id"] in self._waiting:
                await self._waiting.pop(msg["id"]).send(msg)
            elif msg.get("method") == "Runtime.exceptionThrown":
                details = msg["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or details.get("text"))
            elif msg.get("method") == "Runtime.consoleAPICalled" and msg["params"]["type"] == "error":
                self.errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in msg["params"]["args"])
                )

    async def send(self, method: str, params: dict | None = None, *, browser: bool = False) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if not browser:
            msg["sessionId"] = self.session_id
        send, recv = trio.open_memory_channel(1)
        self._waiting[self._next] = send
        await self.ws.send_message(json.dumps(msg))
        with trio.fail_after(15):
            reply = await recv.receive()
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def js(self, expression: str):
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_js(self, expression: str, seconds: float = 20) -> object:
        """Evaluate ``expression`` until it is truthy; fail after ``seconds``."""
        with trio.move_on_after(seconds):
            while True:
                value = await self.js(expression)
                if value not in (None, False, 0, ""):  # a DOM node comes back as {}
                    return value
                await trio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression}; page errors: {self.errors}")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_js("document.readyState === 'complete'")

    async def type(self, selector: str, text: str) -> None:
        await self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", {"text": text})

    async def press_enter(self) -> None:
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
        await self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **key})
        await self.send("Input.dispatchKeyEvent", {"type": "keyUp", **key})

    async def screenshot(self, path: Path) -> None:
        data = await self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(data["data"]))


@asynccontextmanager
async def open_page(tmp_path: Path) -> AsyncIterator[Page]:
    if CHROMIUM is None:  # scripts/test.sh installs it; a missing browser is a failure, not a skip
        raise RuntimeError("this test needs headless Chromium: apt-get install chromium (scripts/test.sh does)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        "--lang=en-US",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    proc = await trio.lowlevel.open_process(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        with trio.fail_after(30):
            while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                if proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {proc.returncode}")
                await trio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        async with open_websocket_url(f"ws://127.0.0.1:{port}{path}", max_message_size=64 * 2**20) as ws:
            async with trio.open_nursery() as nursery:
                page = Page(ws, "")
                nursery.start_soon(page.reader)
                target = await page.send("Target.createTarget", {"url": "about:blank"}, browser=True)
                attached = await page.send(
                    "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, browser=True
                )
                page.session_id = attached["sessionId"]
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                await page.send(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
                )
                yield page
                nursery.cancel_scope.cancel()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        with trio.move_on_after(10):
            await proc.wait()


MINE = "document.querySelectorAll('#log .msg.mine:not(.pending)')"
BOT = "document.querySelectorAll('#log .msg.bot')"


async def send_from_page(page: Page, text: str) -> None:
    await page.type("#input", text)
    await page.press_enter()


async def test_page_send_and_reply(nursery, tmp_path):
    daemon: FakeDaemon = await serve_fake(nursery)
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js('document.querySelector(\'[data-chat="main"][aria-current="true"]\')')
        await page.wait_js("document.getElementById('status').dataset.state === 'live'")
        assert await page.js("document.getElementById('chat-title').textContent") == "main"
        assert await page.js("document.getElementById('sender').value") == "me"

        await send_from_page(page, "Hello Andy, are you there?")
        await page.wait_js(f"{MINE}.length === 1")
        assert (
            await page.js(f"{MINE}[0].querySelector('.bubble').textContent") == "Hello Andy, are you there?"
        )
        await page.wait_js(f"{BOT}.length === 1")
        assert (
            await page.js(f"{BOT}[0].querySelector('.bubble').textContent")
            == "Echo: Hello Andy, are you there?"
        )
        assert await page.js(f"{BOT}[0].querySelector('.sender').textContent") == "Andy"
        # input cleared, nothing shown twice, typing indicator gone
        assert await page.js("document.getElementById('input').value") == ""
        assert await page.js("document.querySelectorAll('#log .msg').length") == 2
        await page.wait_js("document.getElementById('typing').hidden")
        assert [m["sender"] for m in daemon.messages["main"]] == ["me", "Andy"]
        assert daemon.hit_count("GET", r"/events$") >= 1
        assert page.errors == []


async def test_page_escapes_html_and_renders_markdown(nursery, tmp_path):
    daemon = await serve_fake(nursery)
    evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> **not bold**'
    daemon.add(
        "main",
        "Andy",
        "Here: **bold** and `<b>code</b>` [safe](https://example.org) [bad](javascript:alert(1))\n"
        "```\n<script>alert(2)</script>\n```",
        from_bot=True,
    )
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js(f"{BOT}.length === 1")
        await send_from_page(page, evil)
        await page.wait_js(f"{BOT}.length === 2")
        assert await page.js(f"{MINE}[0].querySelector('.bubble').textContent") == evil
        assert await page.js(f"{BOT}[1].querySelector('.bubble').textContent") == "Echo: " + evil.replace(
            "**", ""
        )
        assert await page.js("window.pwned") is None
        assert await page.js("document.querySelectorAll('#log script, #log img, #log b').length") == 0
        # user text is never formatted; bot text gets markdown-lite
        assert await page.js(f"{MINE}[0].querySelectorAll('strong').length") == 0
        first = f"{BOT}[0].querySelector('.bubble')"
        assert await page.js(f"{first}.querySelector('strong').textContent") == "bold"
        assert await page.js(f"{first}.querySelector('p code').textContent") == "<b>code</b>"
        assert await page.js(f"{first}.querySelector('pre code').textContent") == "<script>alert(2)</script>"
        hrefs = await page.js(f"[...{first}.querySelectorAll('a')].map(a => a.href)")
        assert hrefs == ["https://example.org/"]
        assert page.errors == []


async def test_page_trigger_hint_in_group(nursery, tmp_path):
    daemon = await serve_fake(nursery)
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js("document.getElementById('status').dataset.state === 'live'")
        # the "open a chat" box: an unknown chat gives a readable error, a known one opens
        await page.type("#open-name", "nope")
        await page.js("document.getElementById('open-chat').requestSubmit()")
        banner = await page.wait_js(
            "!document.getElementById('banner').hidden && document.getElementById('banner-text').textContent"
        )
        assert "nope" in banner
        await page.type("#open-name", "local:team")
        await page.js("document.getElementById('open-chat').requestSubmit()")
        await page.wait_js('document.querySelector(\'[data-chat="team"][aria-current="true"]\')')
        assert await page.js("location.hash") == "#team"
        assert await page.js("document.getElementById('banner').hidden") is True
        await page.type("#input", "hello everyone")
        hint = await page.wait_js("document.getElementById('hint').textContent")
        assert "starting with @Andy" in hint
        await page.js("document.querySelector('#hint button').click()")
        assert await page.js("document.getElementById('input').value") == "@Andy hello everyone"
        assert await page.js("document.getElementById('hint').textContent") == ""
        await page.press_enter()
        await page.wait_js(f"{BOT}.length === 1")
        assert daemon.messages["team"][0]["text"] == "@Andy hello everyone"


async def test_page_login_on_401(nursery, tmp_path):
    daemon = await serve_fake(nursery, token="s3cret")
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js("document.getElementById('login').open")
        await page.type("#token", "wrong")
        await page.js("document.getElementById('login-form').requestSubmit()")
        await page.wait_js("document.getElementById('login-error').textContent")
        await page.js("document.getElementById('token').value = ''")
        await page.type("#token", "s3cret")
        await page.js("document.getElementById('login-form').requestSubmit()")
        await page.wait_js("!document.getElementById('login').open")
        await page.wait_js("document.getElementById('status').dataset.state === 'live'")
        await send_from_page(page, "after login")
        await page.wait_js(f"{BOT}.length === 1")


async def test_login_link_signs_the_browser_in(run_daemon, tmp_path):
    """The link the daemon's ready line prints (/?token=...) against the real daemon: the browser
    gets the HttpOnly cookie, the token leaves the address bar, and the chat works."""
    d = await run_daemon()  # no NGB_API_TOKEN: the generated token
    async with open_page(tmp_path) as page:
        await page.goto(f"{d.base_url}/?token={d.token}")
        await page.wait_js("document.getElementById('status').dataset.state === 'live'")
        assert await page.js("location.pathname + location.search") == "/"
        assert not await page.js("document.getElementById('login').open")
        cookies = (await page.send("Network.getCookies", {"urls": [d.base_url + "/"]}))["cookies"]
        assert [(c["name"], c["value"], c["httpOnly"]) for c in cookies] == [("ngb_token", d.token, True)]
        assert await page.js("document.cookie") == ""  # scripts on the page cannot read it
        await send_from_page(page, "hello via the link")
        await page.wait_js(f"{BOT}.length === 1")
        # without the link (a fresh profile would be the same): the sign-in dialog
        await page.send("Network.clearBrowserCookies")
        await page.goto(d.base_url + "/")
        await page.wait_js("document.getElementById('login').open")


async def test_page_falls_back_to_polling(nursery, tmp_path):
    daemon = await serve_fake(nursery, sse=False)
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js("document.getElementById('status').dataset.state === 'polling'")
        await send_from_page(page, "poll please")
        await page.wait_js(f"{BOT}.length === 1")
        assert await page.js("document.querySelectorAll('#log .msg').length") == 2
        # messages from elsewhere (the terminal client) show up too
        daemon.add("main", "terminal", "hi from the terminal")
        await page.wait_js("document.querySelectorAll('#log .msg.other').length === 1")


async def test_page_screenshot(nursery, tmp_path):
    """A short conversation, kept as a screenshot (NGB_CHAT_SCREENSHOT) for looking at."""
    daemon = await serve_fake(nursery, chats=("main", "family", "team"), bot_delay=0.3)
    daemon.add("main", "me", "@Andy what's on my calendar tomorrow?")
    daemon.add(
        "main",
        "Andy",
        "Tomorrow you have:\n- **09:30** stand-up with the team\n- **13:00** lunch with Sam\n"
        "- **16:00** dentist\n\nWant me to send you a reminder an hour before each?",
        from_bot=True,
    )
    chart = daemon.add_file("week.png", png(320, 180, (99, 102, 241)), "image/png")
    agenda = daemon.add_file("agenda.pdf", b"%PDF-1.4\n" + bytes(180_000), "application/pdf")
    daemon.add("main", "Andy", "Your week at a glance:", from_bot=True, attachments=[chart, agenda])
    daemon.add("main", "me", "Yes please. And how do I list the scheduled tasks?")
    daemon.add(
        "main",
        "Andy",
        "Done, three reminders are scheduled. To see them run:\n```sh\nngb tasks list\n```\n"
        "or ask me `@Andy list tasks`. More in the [docs](https://example.org/docs).",
        from_bot=True,
    )
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js(f"{BOT}.length === 3")
        await send_from_page(page, "Thanks! <b>Perfect</b>")
        await page.wait_js("!document.getElementById('typing').hidden")
        await page.wait_js(f"{BOT}.length === 4")
        await page.type("#input", "@Andy also remind me to call mum")
        screenshot = tmp_path / "screenshot.png"
        screenshot.write_bytes(png(64, 40, (16, 185, 129)))
        await set_files(page, "#file-input", [screenshot])
        await page.wait_js("document.querySelector('#chips .chip-thumb').naturalWidth === 64")
        await trio.sleep(0.3)
        shot = tmp_path / "chat.png"
        await page.screenshot(shot)
        assert shot.stat().st_size > 10_000
        if os.environ.get("NGB_CHAT_SCREENSHOT"):
            shutil.copy(shot, os.environ["NGB_CHAT_SCREENSHOT"])
        assert page.errors == []


# ------------------------------------------------------------------ files


async def set_files(page: Page, selector: str, paths: list[Path]) -> None:
    """Choose files in a file input as the browser's file dialog would (it fires "change")."""
    doc = await page.send("DOM.getDocument")
    node = await page.send("DOM.querySelector", {"nodeId": doc["root"]["nodeId"], "selector": selector})
    await page.send("DOM.setFileInputFiles", {"nodeId": node["nodeId"], "files": [str(p) for p in paths]})


CHIPS = "[...document.querySelectorAll('#chips .chip')].map(c => c.querySelector('.chip-name').textContent)"


def js_file(name: str, data: bytes, mime: str) -> str:
    """A JS expression making a File of these bytes (as a paste or a drop hands them over)."""
    b64 = base64.b64encode(data).decode()
    return (
        f"new File([Uint8Array.from(atob({json.dumps(b64)}), c => c.charCodeAt(0))], "
        f"{json.dumps(name)}, {{type: {json.dumps(mime)}}})"
    )


async def test_page_attach_send_and_show_files(nursery, tmp_path):
    """Files chosen with the attach button show as chips (one removed again), go out as one
    multipart POST with the exact bytes, and come back in the log: the image inline (decoded from
    /api/files under the page's CSP) and openable, the text file as a link with name and size;
    the bot's files too."""
    daemon = await serve_fake(nursery)
    photo, notes, extra = tmp_path / "photo.png", tmp_path / "notes.txt", tmp_path / "oops.txt"
    photo.write_bytes(png(40, 30))
    notes.write_text("line one\nline two\n")
    extra.write_text("not this one")
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js("document.getElementById('status').dataset.state === 'live'")
        assert await page.js("document.getElementById('attach').getAttribute('aria-label')") == "Attach files"
        assert await page.js("document.getElementById('file-input').multiple") is True
        assert await page.js("document.getElementById('chips').hidden") is True

        await set_files(page, "#file-input", [photo, notes, extra])
        await page.wait_js(f"{CHIPS}.length === 3")
        assert await page.js(CHIPS) == ["photo.png", "notes.txt", "oops.txt"]
        await page.wait_js("document.querySelector('#chips .chip-thumb').naturalWidth === 40")  # shown under the CSP
        await page.js("document.querySelector('#chips .chip[data-name=\"oops.txt\"] .chip-remove').click()")
        assert await page.js(CHIPS) == ["photo.png", "notes.txt"]
        assert await page.js("document.activeElement.classList.contains('chip-remove')")  # focus stays in the chips

        await send_from_page(page, "look at these")
        await page.wait_js(f"{MINE}.length === 1")
        assert await page.js("document.getElementById('chips').hidden") is True
        [upload] = daemon.uploads
        assert upload["content_type"].startswith("multipart/form-data; boundary=")
        assert upload["fields"] == {"sender": ["me"], "text": ["look at these"]}
        assert [(f["name"], f["mime"], f["data"]) for f in upload["files"]] == [
            ("photo.png", "image/png", photo.read_bytes()),
            ("notes.txt", "text/plain", notes.read_bytes()),
        ]

        mine = f"{MINE}[0]"
        assert await page.js(f"{mine}.querySelector('.bubble').textContent") == "look at these"
        await page.wait_js(f"{mine}.querySelector('.att-image img').naturalWidth === 40")
        assert await page.js(f"{mine}.querySelector('.att-image img').alt") == "photo.png"
        link = await page.js(
            f"(a => [a.getAttribute('href'), a.getAttribute('download'), a.textContent])"
            f"({mine}.querySelector('a.att-file'))"
        )
        assert link == ["/api/files/2", "notes.txt", "TXTnotes.txt18 B"]

        # the bot's answer carries the files back: shown the same way
        await page.wait_js(f"{BOT}.length === 1")
        await page.wait_js(f"{BOT}[0].querySelector('.att-image img').naturalWidth === 40")
        assert await page.js(f"{BOT}[0].querySelector('a.att-file .att-name').textContent") == "notes.txt"

        # click to open: the viewer shows the full image, with a download link; Close closes it
        await page.js(f"{mine}.querySelector('.att-image').click()")
        await page.wait_js("document.getElementById('viewer').open")
        await page.wait_js("document.getElementById('viewer-img').naturalWidth === 40")
        assert await page.js("document.getElementById('viewer-download').getAttribute('href')") == "/api/files/1"
        assert "photo.png" in await page.js("document.getElementById('viewer-name').textContent")
        await page.js("document.getElementById('viewer-close').click()")
        assert await page.js("document.getElementById('viewer').open") is False
        assert await page.js("document.querySelectorAll('#log .msg').length") == 2
        assert page.errors == []


async def test_page_paste_and_drop_files(nursery, tmp_path):
    """A pasted screenshot and a dropped file become chips; sent without text, the message shows
    only its files."""
    daemon = await serve_fake(nursery)
    shot = png(8, 8, (30, 120, 200))
    csv = js_file("report.csv", b"a,b\n1,2\n", "text/csv")
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js("document.getElementById('status').dataset.state === 'live'")
        assert await page.js("document.getElementById('send').disabled") is True
        await page.js(
            "(() => { const dt = new DataTransfer(); "
            f"dt.items.add({js_file('image.png', shot, 'image/png')}); "
            "document.getElementById('input').dispatchEvent("
            "new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true})); })()"
        )
        await page.wait_js(f"{CHIPS}.length === 1")
        assert re.fullmatch(r"screenshot-\d{8}-\d{6}\.png", (await page.js(CHIPS))[0])
        assert await page.js("document.getElementById('send').disabled") is False

        # dragging files over the chat shows the drop zone; dropping adds them
        await page.js(
            "window.dt = new DataTransfer(); "
            f"dt.items.add({csv}); "
            "document.getElementById('log').dispatchEvent("
            "new DragEvent('dragenter', {dataTransfer: dt, bubbles: true, cancelable: true}))"
        )
        assert await page.js("document.getElementById('drop-overlay').hidden") is False
        await page.js(
            "document.getElementById('log').dispatchEvent("
            "new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}))"
        )
        await page.wait_js(f"{CHIPS}.length === 2")
        assert await page.js("document.getElementById('drop-overlay').hidden") is True

        await page.js("document.getElementById('input').focus()")
        await page.press_enter()
        await page.wait_js(f"{MINE}.length === 1")
        [upload] = daemon.uploads
        assert upload["fields"]["text"] == [""]
        assert [f["data"] for f in upload["files"]] == [shot, b"a,b\n1,2\n"]
        assert [f["name"] for f in upload["files"]][1] == "report.csv"
        assert await page.js(f"{MINE}[0].querySelector('.bubble')") is None  # no empty bubble
        await page.wait_js(f"{MINE}[0].querySelector('.att-image img').naturalWidth === 8")
        assert await page.js(f"{MINE}[0].querySelector('a.att-file .att-name').textContent") == "report.csv"
        assert page.errors == []


async def test_page_bot_audio_and_documents(nursery, tmp_path):
    daemon = await serve_fake(nursery)
    voice = daemon.add_file("note.ogg", b"OggS" + bytes(300), "audio/ogg")
    voice["transcript"] = "call me back after lunch"
    pdf = daemon.add_file("report.pdf", b"%PDF-1.4\n" + bytes(3 * 1024 * 1024), "application/pdf")
    old = dict(daemon.add_file("old.png", png(2, 2), "image/png"), gone=True)
    daemon.add("main", "Andy", "Here you go", from_bot=True, attachments=[voice, pdf, old])
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js(f"{BOT}.length === 1")
        bot = f"{BOT}[0]"
        assert await page.js(f"{bot}.querySelector('audio').getAttribute('src')") == voice["url"]
        assert await page.js(f"{bot}.querySelector('audio').controls") is True
        assert await page.js(f"{bot}.querySelector('audio').getAttribute('aria-label')") == "note.ogg · 304 B"
        links = await page.js(
            f"[...{bot}.querySelectorAll('a.att-file')].map(a => [a.getAttribute('href'), a.textContent])"
        )
        assert links == [[voice["url"], "OGGnote.ogg304 B"], [pdf["url"], "PDFreport.pdf3 MB"]]
        assert await page.js(f"{bot}.querySelector('.att-transcript').textContent") == "call me back after lunch"
        # a file the retention removed: its name, no link, no image to load
        assert await page.js(f"{bot}.querySelector('.att-file.gone').textContent") == "PNGold.png73 Bno longer kept"
        assert await page.js(f"{bot}.querySelectorAll('img').length") == 0
        assert page.errors == []


async def test_page_too_large_keeps_the_files(nursery, tmp_path):
    """A 413 says so, with the limit, and leaves the text and the files in the composer."""
    daemon = await serve_fake(nursery)
    daemon.max_request_bytes = 64 * 1024
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(200 * 1024))
    async with open_page(tmp_path) as page:
        await page.goto(daemon.url + "/")
        await page.wait_js("document.getElementById('status').dataset.state === 'live'")
        await set_files(page, "#file-input", [big])
        await page.wait_js(f"{CHIPS}.length === 1")
        await send_from_page(page, "too much")
        banner = await page.wait_js(
            "!document.getElementById('banner').hidden && document.getElementById('banner-text').textContent"
        )
        assert banner.startswith("Not sent (too large): ") and "> 64 KB" in banner
        assert await page.js(CHIPS) == ["big.bin"]
        assert await page.js("document.getElementById('input').value") == "too much"
        assert await page.js("document.querySelectorAll('#log .msg').length") == 0
        # the composer still works: drop the file, send the text
        await page.js("document.querySelector('#chips .chip-remove').click()")
        await page.js("document.getElementById('input').focus()")
        await page.press_enter()
        await page.wait_js(f"{BOT}.length === 1")
        assert page.errors == []


async def test_page_files_with_the_real_daemon(run_daemon, tmp_path):
    """The page against the real daemon, signed in with its cookie: a photo attached and sent is
    stored, handed to the agent, and shown back from /api/files under the daemon's CSP."""
    d = await run_daemon(NGB_MEDIA_MAX_FILE_MB="1", NGB_MEDIA_MAX_FILES="1")
    photo, huge = tmp_path / "cat.png", tmp_path / "huge.bin"
    photo.write_bytes(png(48, 32))
    huge.write_bytes(bytes(3 * 1024 * 1024))
    async with open_page(tmp_path) as page:
        await page.goto(f"{d.base_url}/?token={d.token}")
        await page.wait_js("document.getElementById('status').dataset.state === 'live'")
        await set_files(page, "#file-input", [photo])
        await page.wait_js(f"{CHIPS}.length === 1")
        await send_from_page(page, "what is this?")
        shown = await page.wait_js(
            f"({MINE}.length === 1 && !!{MINE}[0].querySelector('.att-image img'))"
            " || document.getElementById('banner-text').textContent"
        )
        assert shown is True, shown  # else the banner's "Not sent: ..."
        await page.wait_js(f"{MINE}[0].querySelector('.att-image img').naturalWidth === 48")
        assert await page.js(f"{MINE}[0].querySelector('.bubble').textContent") == "what is this?"
        await page.wait_js(f"{BOT}.length === 1")
        [att] = (await d.history("main"))[0]["attachments"]
        assert (await d.http.get(att["url"])).content == photo.read_bytes()
        assert "/workspace/group/attachments/" in d.launcher.inputs[-1]["prompt"]
        # a file past the limit the daemon announces (/api/info) is refused when it is picked
        await set_files(page, "#file-input", [huge])
        refused = await page.wait_js(
            "!document.getElementById('banner').hidden && document.getElementById('banner-text').textContent"
        )
        assert refused.startswith("Not attached: huge.bin is 3"), refused
        assert await page.js(CHIPS) == []
        # past the upload limit (3 files of 0.9 MB > 1 file x 1 MB + 1 MB): the daemon's 413 is
        # shown, the files stay, and the page goes on working
        parts = []
        for i in range(3):
            part = tmp_path / f"part{i}.bin"
            part.write_bytes(b"%PDF-1.4\n" + bytes(900 * 1024))
            parts.append(part)
        await set_files(page, "#file-input", parts)
        await page.wait_js(f"{CHIPS}.length === 3")
        await page.js("document.getElementById('banner').hidden = true")
        await send_from_page(page, "and this?")
        banner = await page.wait_js(
            "!document.getElementById('banner').hidden && document.getElementById('banner-text').textContent"
        )
        assert banner.startswith("Not sent (too large): "), banner
        assert await page.js(CHIPS) == ["part0.bin", "part1.bin", "part2.bin"]
        for _ in range(2):
            await page.js("document.querySelector('#chips .chip-remove').click()")
        await page.js("document.querySelector('#chips .chip-remove').click()")
        await page.js("document.getElementById('input').focus()")
        await page.press_enter()
        await page.wait_js(f"{BOT}.length === 2")
        assert page.errors == []
