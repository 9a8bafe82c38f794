"""QQ over OneBot v11 (go-cqhttp, NapCat, Lagrange.OneBot, LLOneBot, ...): plain JSON over a
websocket, spoken with trio-websocket; no SDK.

Two ways to connect, one per configuration:

- **forward** (``url = "ws://127.0.0.1:3001/"``): the daemon connects to the implementation's
  websocket server (the "universal" endpoint, events and API calls on one socket) and reconnects
  with backoff and jitter forever. The access token goes in ``Authorization: Bearer <token>``; a
  401/403 handshake is a rejected token: state ``unauthorized``, retried slowly, never fatal.
- **reverse** (``listen = "127.0.0.1:6700"``): the daemon serves a websocket at ``path`` (default
  ``/onebot/v11/ws``) and the implementation connects to it (and reconnects by itself). A connection
  without the right token (``Authorization: Bearer``/``Token`` or ``?access_token=``) is refused
  with 401/403 before the upgrade; a newer accepted connection replaces the older one.

Events: ``meta_event`` (lifecycle, heartbeat) are noted; ``message`` events (group and private;
``message`` as a segment array or a CQ-code string) become InboundMessage records, in arrival order,
stored before anything else. Chats are ``qq:group:<group id>`` and ``qq:private:<user id>``; a
message's platform id is ``group:<group id>:<message id>`` / ``private:<user id>:<message id>``. An
``at`` of the bot (``[CQ:at,qq=<self_id>]``), a reply to one of the bot's messages and every private
message set ``mentions_bot``.

OneBot v11 does not redeliver events a disconnected client missed, and has no ack. The channel
keeps, per chat, the newest message it has *stored* in the daemon's store (``NewestStored``, moved
only after the store) and, after every connect, a reconnect or the first one after a restart, asks
the history of every chat with such a mark where the implementation can (``get_group_msg_history``
/ ``get_friend_msg_history``, extensions of NapCat, go-cqhttp, Lagrange), paging back with
``message_seq`` until it reaches the mark (bounded by ``catch_up_pages``). What is newer is
submitted oldest first; the store's key on (channel, platform id) keeps every message exactly once.
An implementation that answers these actions as unsupported is logged once and the channel goes on.

Replies: ``send_msg`` with a ``reply`` segment quoting the trigger on the first part; Markdown is
flattened to plain text (QQ renders none); long replies are split at ``part_limit`` at paragraph and
sentence boundaries and a retried reply resumes at the part that failed. See docs/channels/qq-onebot.md.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import trio

from ..config import parse_bool, read_secret_file
from ..errors import one_error
from ..records import InboundMessage
from .base import ChannelError, ChannelMemory, Submit
from .common import (
    CONNECTED,
    DISCONNECTED,
    STOPPED,
    UNAUTHORIZED,
    AuthError,
    ChannelStatus,
    InboundGate,
    Lru,
    NewestStored,
    PartialSends,
    reconnect_forever,
    redact_in_logs,
    split_text,
)
from .settings import ChannelTable
from .ws_rpc import JsonRpcSocket, Route

log = logging.getLogger(__name__)

PREFIX = "qq"
TABLE = "qq"  # [channels.qq]
TOKEN_ENV = "NGB_ONEBOT_ACCESS_TOKEN"
DEFAULT_PATH = "/onebot/v11/ws"  # reverse mode: where the implementation connects
DEFAULT_PART_LIMIT = 3000  # QQ cuts text messages around 4,500 characters; stay well under
KEYS = {"url", "listen", "path", "access_token", "access_token_file", "part_limit", "api_timeout",
        "connect_timeout", "ping_interval", "reconnect_base", "reconnect_cap", "fetch_missed", "catch_up_pages",
        "enabled"}
# retcodes that will not change on a retry (bad request, unsupported action)
FATAL_RETCODES = {1400, 1404}
HISTORY_COUNT = 50  # messages asked per history page (go-cqhttp answers 20 whatever is asked)


@attrs.frozen
class OneBotSettings:
    mode: str  # "forward" | "reverse"
    url: str | None = None  # forward: the implementation's websocket (universal endpoint)
    host: str = "127.0.0.1"  # reverse: where the daemon listens
    port: int = 6700
    path: str = DEFAULT_PATH
    access_token: str = attrs.field(default="", repr=False)
    part_limit: int = DEFAULT_PART_LIMIT
    api_timeout: float = 15.0
    connect_timeout: float = 15.0
    ping_interval: float = 20.0  # websocket ping; no pong within this -> reconnect
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    fetch_missed: bool = True
    catch_up_pages: int = 20  # history pages read per chat in one catch-up

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, token: str, config_file: Path | None = None) -> OneBotSettings:
        t = ChannelTable(TABLE, table, config_file, KEYS, doc="qq-onebot")
        url, listen = t.get("url"), t.get("listen")
        if url and listen:
            raise t.error("listen", "set url (forward websocket) or listen (reverse), not both")
        host, port = "127.0.0.1", 6700
        if url:
            url = t.url("url", "", schemes=("ws", "wss"))
        if listen:
            host, _, raw_port = str(listen).rpartition(":")
            try:
                port = int(raw_port)
            except ValueError:
                raise t.error("listen", f'must be "HOST:PORT", got {listen!r}') from None
            host = host.strip("[]") or "127.0.0.1"
        path = t.string("path", DEFAULT_PATH)  # not cls.path: a slot descriptor
        return cls(
            mode="reverse" if listen else "forward",
            url=url or None,
            host=host,
            port=port,
            path=path if path.startswith("/") else "/" + path,
            access_token=token,
            part_limit=t.integer("part_limit", DEFAULT_PART_LIMIT, lo=100, hi=10_000),
            api_timeout=t.duration("api_timeout", 15.0),
            connect_timeout=t.duration("connect_timeout", 15.0),
            ping_interval=t.duration("ping_interval", 20.0),
            reconnect_base=t.duration("reconnect_base", 1.0),
            reconnect_cap=t.duration("reconnect_cap", 60.0),
            fetch_missed=t.boolean("fetch_missed", True),
            catch_up_pages=t.integer("catch_up_pages", 20, lo=1, hi=1000),
        )


def from_config(config: Any, env: Mapping[str, str] | None = None, *,
                memory: ChannelMemory | None = None) -> OneBotChannel | None:
    """The QQ channel this configuration asks for, or None (one log line) when it lacks its token or
    its url/listen. The token: NGB_ONEBOT_ACCESS_TOKEN, or ``access_token`` put into the table by the
    environment, or ``access_token_file`` (mode 600)."""
    env = os.environ if env is None else env
    tables: Mapping[str, Any] = getattr(config, "channels", {}) or {}
    table = tables.get(TABLE)
    token = env.get(TOKEN_ENV, "").strip()
    if table is None and not token:
        return None
    table = dict(table or {})
    if not parse_bool(table.get("enabled", True)):
        return None
    config_file = getattr(config, "config_file", None)
    if not token:
        token = str(table.get("access_token") or "").strip()
    if not token and table.get("access_token_file"):
        path = Path(str(table["access_token_file"])).expanduser()
        if not path.is_absolute() and config_file is not None:
            path = config_file.parent / path
        token = read_secret_file(path, f"channels.{TABLE}.access_token_file")
    if not table.get("url") and not table.get("listen"):
        log.warning("channel qq: off (set channels.qq.url for a forward websocket or channels.qq.listen for reverse)")
        return None
    if not token:
        log.warning("channel qq: off (no access token: set %s or channels.qq.access_token_file)", TOKEN_ENV)
        return None
    settings = OneBotSettings.from_table(table, token=token, config_file=config_file)
    return OneBotChannel(settings, trigger=getattr(config, "trigger", ""), memory=memory)


# -- messages: CQ codes and segments -------------------------------------------------------------------
_CQ = re.compile(r"\[CQ:([A-Za-z0-9_.-]+)((?:,[^,\]]*)*)\]")


def cq_unescape(text: str, *, in_param: bool = False) -> str:
    if in_param:
        text = text.replace("&#44;", ",")
    return text.replace("&#91;", "[").replace("&#93;", "]").replace("&amp;", "&")


def cq_escape(text: str, *, in_param: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("[", "&#91;").replace("]", "&#93;")
    return text.replace(",", "&#44;") if in_param else text


def parse_cq(text: str) -> list[dict[str, Any]]:
    """A CQ-code string -> message segments: "hi [CQ:at,qq=1] x" -> text, at, text."""
    segments: list[dict[str, Any]] = []
    pos = 0
    for m in _CQ.finditer(text):
        if m.start() > pos:
            segments.append({"type": "text", "data": {"text": cq_unescape(text[pos:m.start()])}})
        data: dict[str, str] = {}
        for param in m.group(2).split(",")[1:]:
            key, _, value = param.partition("=")
            data[key.strip()] = cq_unescape(value, in_param=True)
        segments.append({"type": m.group(1), "data": data})
        pos = m.end()
    if pos < len(text):
        segments.append({"type": "text", "data": {"text": cq_unescape(text[pos:])}})
    return segments


def to_segments(message: Any) -> list[dict[str, Any]]:
    """An event's ``message`` (segment array, one segment, or CQ string) -> segments."""
    if isinstance(message, str):
        return parse_cq(message)
    if isinstance(message, dict):
        message = [message]
    if not isinstance(message, list):
        raise ValueError(f"message must be a list of segments or a CQ string, got {type(message).__name__}")
    out = []
    for seg in message:
        if not isinstance(seg, dict) or not isinstance(seg.get("type"), str):
            raise ValueError(f"not a message segment: {seg!r:.80}")
        data = seg.get("data") or {}
        out.append({"type": seg["type"], "data": data if isinstance(data, dict) else {}})
    return out


_PLACEHOLDERS = {"image": "[image]", "record": "[voice]", "video": "[video]", "file": "[file]", "face": "[face]",
                 "mface": "[sticker]", "dice": "[dice]", "rps": "[rock-paper-scissors]", "poke": "[poke]",
                 "location": "[location]", "contact": "[contact]", "music": "[music]", "forward": "[forwarded messages]",
                 "json": "[card]", "xml": "[card]", "share": "[link]", "markdown": "[markdown]"}


@attrs.frozen
class Rendered:
    text: str
    mentions_self: bool
    reply_id: str | None


def render(segments: list[dict[str, Any]], self_id: str, bot_name: str) -> Rendered:
    """Segments -> the text a person reads, whether the bot was @-mentioned, and the quoted message."""
    parts: list[str] = []
    mentioned = False
    reply: str | None = None
    for seg in segments:
        kind, data = seg["type"], seg["data"]
        if kind == "text":
            parts.append(str(data.get("text", "")))
        elif kind == "at":
            qq = str(data.get("qq", ""))
            if self_id and qq == self_id:
                mentioned = True
                parts.append(f"@{bot_name or qq}")
            elif qq == "all":
                parts.append("@all")
            else:
                parts.append(f"@{data.get('name') or qq}")
        elif kind == "reply":
            reply = str(data.get("id", "")) or None
        elif kind == "share" and data.get("url"):
            parts.append(f"[link: {data.get('title') or ''} {data['url']}]".replace(":  ", ": "))
        elif kind == "image" and data.get("summary"):
            parts.append(f"[image: {data['summary']}]")
        else:
            parts.append(_PLACEHOLDERS.get(kind, f"[{kind}]"))
    text = "".join(parts)
    # a leading at-mention is usually followed by a space; keep the text tidy either way
    return Rendered(re.sub(r"[ \t]{2,}", " ", text).strip(), mentioned, reply)


# -- Markdown -> plain text (QQ renders no Markdown in normal messages) ------------------------------------
_MD_FENCE = re.compile(r"^[ \t]*```[\w+-]*[ \t]*$\n?", re.MULTILINE)
_MD_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_MD_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__", re.DOTALL)
_MD_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_MD_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_MD_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+", re.MULTILINE)


def markdown_to_plain(text: str) -> str:
    """Common Markdown -> readable plain text: markers dropped, links as "label (url)", bullets as •.
    Code (fenced or inline) is kept verbatim, only its fences and backticks go."""
    held: list[str] = []

    def hold(s: str) -> str:
        held.append(s)
        return f"\x00{len(held) - 1}\x00"

    # code first, so nothing inside it is touched
    text = re.sub(r"```[\w+-]*[ \t]*\n?(.*?)```", lambda m: hold(m.group(1).rstrip("\n")), text, flags=re.DOTALL)
    text = _MD_INLINE_CODE.sub(lambda m: hold(m.group(1)), text)
    text = _MD_LINK.sub(lambda m: m.group(1) if m.group(1) == m.group(2) else f"{m.group(1)} ({m.group(2)})", text)
    text = _MD_HEADING.sub(lambda m: m.group(1), text)
    text = _MD_BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = _MD_BOLD.sub(lambda m: m.group(1) or m.group(2), text)
    text = _MD_ITALIC.sub(lambda m: m.group(1), text)
    text = _MD_STRIKE.sub(lambda m: m.group(1), text)
    text = _MD_FENCE.sub("", text)  # a stray, unbalanced fence line
    return re.sub(r"\x00(\d+)\x00", lambda m: held[int(m.group(1))], text)


# -- chats -----------------------------------------------------------------------------------------------
def qq_chat(kind: str, target: int | str) -> str:
    return f"{PREFIX}:{kind}:{target}"


def parse_chat(chat: str) -> tuple[str, int]:
    """"qq:group:123" -> ("group", 123); ChannelError (not retryable) for anything else."""
    prefix, _, rest = chat.partition(":")
    kind, _, target = rest.partition(":")
    if prefix != PREFIX or kind not in ("group", "private") or not target.isdigit():
        raise ChannelError(f"not a QQ chat: {chat!r} (expected qq:group:<group id> or qq:private:<user id>)",
                           retryable=False)
    return kind, int(target)


# -- catch-up marks -------------------------------------------------------------------------------------
# Where a catch-up starts: per chat, the newest message stored, as "<time>:<message id>".
#
# Why not the message id alone: OneBot ids are not ordered. go-cqhttp's message_id is a CRC32 of the
# group and the message's sequence number, NapCat's an MD5-derived "short id"; only some
# implementations count up. ``message_seq`` is no way out either: go-cqhttp puts QQ's real
# per-chat sequence there, NapCat the same short id as message_id (its real sequence is
# ``real_seq``), and private chats of go-cqhttp carry none. What every implementation gives, live
# and in its history answers alike, is ``time``: QQ's server time of the message, in seconds. So
# the mark orders by time, with the id only to make the order total (NewestStored moves a mark
# forward only). Because one second holds several messages whose ids say nothing about their
# order, a catch-up takes every message of the mark's second and later (not strictly newer): the
# ones already stored are dropped by the store's key on the platform id.
def event_mark(event: Mapping[str, Any]) -> str | None:
    """A message event's catch-up mark, or None when it has no usable time or id."""
    stamp, message_id = event.get("time"), event.get("message_id")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or message_id is None:
        return None
    message_id = str(message_id)
    if not message_id.lstrip("-").isdigit():
        return None
    return f"{int(stamp)}:{message_id}"


def mark_order(mark: str) -> tuple[int, int]:
    """"1700000000:-12345" -> (1700000000, -12345); ValueError for anything else."""
    stamp, sep, message_id = mark.partition(":")
    if not sep:
        raise ValueError(f"not a QQ catch-up mark: {mark!r}")
    return int(stamp), int(message_id)


def _event_time(event: Mapping[str, Any]) -> float:
    stamp = event.get("time")
    return float(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else float("inf")


def _sequence(event: Mapping[str, Any]) -> int | None:
    """QQ's per-chat sequence number of a history message where the implementation gives it:
    NapCat's ``real_seq``; go-cqhttp's ``message_seq`` (NapCat's is its message id: no order)."""
    real = event.get("real_seq")
    if real is None and str(event.get("message_seq")) != str(event.get("message_id")):
        real = event.get("message_seq")
    real = str(real) if real is not None else ""
    return int(real) if real.isdigit() else None


def chat_order(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History messages (given in chat order, oldest first, as far as the answers tell) sorted
    oldest first: by time, within one second by QQ's sequence number when every message has one,
    else as given (ids are no order)."""
    if messages and all(_sequence(m) is not None for m in messages):
        return sorted(messages, key=lambda m: (_event_time(m), _sequence(m)))
    return sorted(messages, key=_event_time)  # stable: ties keep the answer's order


class ActionFailed(Exception):
    def __init__(self, action: str, retcode: Any, message: str) -> None:
        super().__init__(f"{action}: retcode {retcode}: {message}")
        self.retcode = retcode


class _Connection(JsonRpcSocket):
    """One open websocket to a OneBot implementation: API calls matched to responses by ``echo``,
    events handed to a memory channel in arrival order."""

    def __init__(self, ws: Any, label: str) -> None:
        super().__init__(ws, label)
        self.last_heartbeat: float | None = None

    async def call(self, action: str, params: dict[str, Any], timeout: float) -> Any:
        """Run an action; its ``data`` on success, ActionFailed otherwise. ConnectionError when the
        socket goes away first, TimeoutError when no answer comes in time."""
        echo = f"ngb-{self.next_serial()}"
        response = await self.request(echo, {"action": action, "params": params, "echo": echo}, timeout)
        if response is None:
            raise ConnectionError(f"{self.label} closed before {action} was answered")
        status, retcode = response.get("status"), response.get("retcode")
        if status == "ok" or retcode == 0:
            return response.get("data")
        if status == "async" or retcode == 1:
            return None  # accepted, done later: no id
        raise ActionFailed(action, retcode, str(response.get("wording") or response.get("msg") or status))

    def route(self, frame: dict[str, Any]) -> Hashable:
        if "post_type" in frame:
            return Route.EVENT
        if "echo" in frame and ("status" in frame or "retcode" in frame):
            return str(frame["echo"])
        return Route.UNEXPECTED

    def malformed_frame(self, raw: Any, reason: ValueError) -> None:
        log.warning("qq: malformed frame from %s ignored (%s): %.200r", self.label, reason, raw)

    def unexpected_frame(self, raw: Any) -> None:
        log.warning("qq: frame from %s is neither an event nor a response, ignored: %.200r", self.label, raw)

    def late_response(self, raw: Any) -> None:
        log.debug("qq: response to an unknown or late call: %.200r", raw)


class OneBotChannel:
    name = PREFIX

    def __init__(self, settings: OneBotSettings, *, trigger: str = "", memory: ChannelMemory | None = None) -> None:
        self.memory = memory  # the daemon's store: newest stored id per chat, the bot's own message ids
        self.settings = settings
        self.trigger = trigger
        self.status = ChannelStatus(PREFIX)
        self.status.secrets = [settings.access_token]
        redact_in_logs(settings.access_token, ("trio-websocket", "trio_websocket", "ngb"))
        self._conn: _Connection | None = None
        self.self_id: str = ""
        self.nickname: str = ""
        self.sessions = 0
        self.fetched = 0  # messages submitted from history answers (some may have been stored already)
        self.catch_ups = 0  # catch-ups finished (one per connect that had chats with a mark)
        self.malformed = 0
        self.rejected = 0  # reverse mode: connections refused for a bad token
        self.listening_port: int | None = None  # reverse mode: the bound port (listen = "host:0" in tests)
        self._partial = PartialSends()
        self._gate = InboundGate(PREFIX, trigger)
        self._last_trigger = self._gate.last_trigger
        # platform ids of the bot's own messages (a reply to one is a mention): a cache of what the
        # store knows (memory.sent_by_bot), which also holds those of earlier runs
        self._ours = Lru(4096)
        self.marks = NewestStored(PREFIX, memory, order=mark_order)  # chat -> newest stored "<time>:<id>"
        self._history_unsupported: set[str] = set()  # actions answered as unsupported (logged once)
        self._listening = False

    @property
    def state(self) -> str:
        return self.status.state

    def describe(self) -> dict[str, Any]:
        out = self.status.describe()
        live = self._conn.malformed if self._conn is not None else 0
        out.update(mode=self.settings.mode, self_id=self.self_id or None, received=self.received,
                   fetched=self.fetched, catch_ups=self.catch_ups, malformed=self.malformed + live,
                   rejected=self.rejected)
        return out

    # -- connecting ------------------------------------------------------------------------------------
    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        session = self._forward if self.settings.mode == "forward" else self._reverse
        await self.marks.load()  # where the last run got to, per chat
        try:
            await reconnect_forever(self.status, lambda: session(submit), base=self.settings.reconnect_base,
                                    cap=self.settings.reconnect_cap)
        finally:
            self.status.set(STOPPED)
            self._conn = None

    async def _forward(self, submit: Submit) -> None:
        from trio_websocket import ConnectionRejected, HandshakeError, open_websocket_url

        url = self.settings.url or ""
        headers = [(b"Authorization", f"Bearer {self.settings.access_token}".encode())]
        try:
            with one_error():
                async with open_websocket_url(url, extra_headers=headers, connect_timeout=self.settings.connect_timeout,
                                              disconnect_timeout=2, max_message_size=16 * 1024 * 1024) as ws:
                    await self._serve(ws, submit, url)
        except ConnectionRejected as exc:
            if exc.status_code in (401, 403):
                raise AuthError(f"the OneBot implementation refused the access token (HTTP {exc.status_code})") from None
            raise ConnectionError(f"handshake refused with HTTP {exc.status_code}") from None
        except HandshakeError as exc:
            raise ConnectionError(f"websocket handshake failed: {type(exc).__name__}: {exc}") from None
        raise ConnectionError("the OneBot implementation closed the connection")

    async def _reverse(self, submit: Submit) -> None:
        from trio_websocket import serve_websocket

        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(
                serve_websocket, partial(self._accept, submit), self.settings.host, self.settings.port, None,
                handler_nursery=nursery, connect_timeout=self.settings.connect_timeout, disconnect_timeout=2,
                max_message_size=16 * 1024 * 1024))
            self.listening_port = server.port
            log.info("qq: waiting for the OneBot implementation on ws://%s:%d%s", self.settings.host, server.port,
                     self.settings.path)
            await trio.sleep_forever()

    def _token_ok(self, request: Any) -> bool | None:
        """True: right token; False: wrong one; None: none given."""
        given: str | None = None
        for key, value in request.headers:
            if key.decode("latin-1").lower() == "authorization":
                scheme, _, rest = value.decode("latin-1").strip().partition(" ")
                given = rest.strip() if scheme.lower() in ("bearer", "token") else value.decode("latin-1").strip()
        if given is None:
            query = dict(parse_qsl(urlsplit(request.path).query))
            given = query.get("access_token")
        if given is None:
            return None
        return hmac.compare_digest(given.encode(), self.settings.access_token.encode())

    async def _accept(self, submit: Submit, request: Any) -> None:
        """Reverse mode: one connection from the implementation."""
        path = urlsplit(request.path).path
        if path.rstrip("/") != self.settings.path.rstrip("/"):
            await request.reject(404, body=b"not found")
            return
        ok = self._token_ok(request)
        if not ok:
            self.rejected += 1
            code = 401 if ok is None else 403
            await request.reject(code, body=b"bad access token")
            reason = "no access token" if ok is None else "a wrong access token"
            log.error("qq: refused a OneBot connection with %s (HTTP %d)", reason, code)
            if self._conn is None:
                self.status.set(UNAUTHORIZED, f"the OneBot implementation connected with {reason}")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        role = headers.get("x-client-role", "Universal")
        if role.lower() != "universal":
            await request.reject(400, body=b"only the Universal client role is supported")
            log.error("qq: refused a OneBot connection with X-Client-Role %s (configure one universal reverse "
                      "websocket)", role)
            return
        ws = await request.accept()
        old = self._conn
        if old is not None:
            log.info("qq: a new OneBot connection replaces the old one")
            with trio.move_on_after(1):
                await old.ws.aclose()
        try:
            await self._serve(ws, submit, f"reverse connection (self id {headers.get('x-self-id', '?')})")
        except Exception as exc:  # noqa: BLE001 - one connection's failure is not the listener's
            log.warning("qq: reverse connection ended: %s", self.status.redact(f"{type(exc).__name__}: {exc}"))
        finally:
            if self._conn is None:
                self.status.set(DISCONNECTED, "the OneBot implementation disconnected; waiting for it to reconnect")

    async def _serve(self, ws: Any, submit: Submit, label: str) -> None:
        """One live connection: read, learn who we are, catch up on missed messages, pump events."""
        conn = _Connection(ws, label)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.reader)
                try:
                    login = await conn.call("get_login_info", {}, self.settings.api_timeout) or {}
                except ActionFailed as exc:
                    log.warning("qq: get_login_info failed (%s); learning the bot's id from events", exc)
                    login = {}
                if login.get("user_id"):
                    self.self_id = str(login["user_id"])
                    self.nickname = str(login.get("nickname") or "")
                self.sessions += 1
                self._conn = conn
                self.status.set(CONNECTED)
                log.info("qq: connected to OneBot (%s) as %s (%s)", label, self.nickname or "?", self.self_id or "?")
                if self.settings.fetch_missed and self.marks.items():
                    # after a reconnect or a restart; the events that arrive meanwhile wait in
                    # conn.events_out, so no live message moves a mark past what is yet to fetch
                    await self._fetch_missed(conn, submit)
                nursery.start_soon(self._pump, conn, submit)
                nursery.start_soon(self._keepalive, conn)
                await conn.closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.malformed += conn.malformed
            if self._conn is conn:
                self._conn = None

    async def _keepalive(self, conn: _Connection) -> None:
        while True:
            await trio.sleep(self.settings.ping_interval)
            try:
                with trio.fail_after(self.settings.ping_interval):
                    await conn.ws.ping()
            except Exception as exc:  # noqa: BLE001 - TooSlowError, ConnectionClosed: the socket is dead
                log.warning("qq: no pong from %s (%s); reconnecting", conn.label, type(exc).__name__)
                await conn.give_up()
                return

    # -- inbound ---------------------------------------------------------------------------------------
    async def _pump(self, conn: _Connection, submit: Submit) -> None:
        async for event in conn.events_out:
            await self._event(event, submit)

    async def _event(self, event: dict[str, Any], submit: Submit, *, fetched: bool = False) -> None:
        kind = event.get("post_type")
        if kind == "meta_event":
            if event.get("meta_event_type") == "heartbeat":
                if self._conn is not None:
                    self._conn.last_heartbeat = trio.current_time()
            elif event.get("meta_event_type") == "lifecycle" and event.get("self_id") and not self.self_id:
                self.self_id = str(event["self_id"])
            return
        if kind != "message":
            return  # notice, request, message_sent (our own messages echoed back)
        try:
            inbound = self.to_inbound(event)
        except (KeyError, TypeError, ValueError) as exc:
            self.malformed += 1
            log.warning("qq: malformed message event ignored (%s): %.300r", exc, event)
            return
        if inbound is None:
            return
        if inbound.reply_to and not inbound.mentions_bot and await self.sent_by_bot(inbound.reply_to):
            inbound = attrs.evolve(inbound, mentions_bot=True)  # quoting the bot (maybe of an earlier run)
        await self._submit(submit, inbound, event_mark(event), fetched=fetched)

    async def _submit(self, submit: Submit, inbound: InboundMessage, mark: str | None, *,
                      fetched: bool = False) -> None:
        if fetched:
            self.fetched += 1
        await self._gate.submit(submit, inbound)  # raises when the store failed: the mark stays
        if mark is not None:
            await self.marks.advance(inbound.chat, mark)

    async def sent_by_bot(self, platform_id: str) -> bool:
        """Whether ``platform_id`` ("group:<id>:<message id>") is a message the bot sent, in this run
        or an earlier one (the outbox stores each delivered reply with the id send() returned)."""
        if platform_id in self._ours:
            return True
        if self.memory is None:
            return False
        try:
            ours = await self.memory.sent_by_bot(PREFIX, platform_id)
        except Exception as exc:  # noqa: BLE001 - not known as ours: only @-mentions trigger then
            log.warning("qq: could not look up whether %s is the bot's message: %s", platform_id, exc)
            return False
        if ours:
            self._ours.put(platform_id, True)
        return ours

    @property
    def received(self) -> int:
        return self._gate.received

    def to_inbound(self, event: dict[str, Any]) -> InboundMessage | None:
        """A OneBot v11 message event -> InboundMessage (None: not a user's message we keep)."""
        mtype = event.get("message_type")
        if mtype not in ("group", "private"):
            return None
        self_id = str(event.get("self_id") or self.self_id or "")
        user_id = str(event["user_id"])
        if self_id and user_id == self_id:
            return None  # our own message (history, or a message_sent reported as message)
        message_id = str(event["message_id"])
        target = str(event["group_id"]) if mtype == "group" else user_id
        if not target.lstrip("-").isdigit() or not message_id.lstrip("-").isdigit():
            raise ValueError("group_id/user_id/message_id must be numbers")
        segments = to_segments(event.get("message", event.get("raw_message", "")))
        rendered = render(segments, self_id, self.nickname)
        if not rendered.text:
            return None
        sender_info = event.get("sender") if isinstance(event.get("sender"), dict) else {}
        anonymous = event.get("anonymous") if isinstance(event.get("anonymous"), dict) else None
        if anonymous:
            sender = str(anonymous.get("name") or "anonymous")
        else:
            sender = str(sender_info.get("card") or sender_info.get("nickname") or user_id)
        chat = qq_chat(mtype, target)
        platform_id = f"{mtype}:{target}:{message_id}"
        reply_to = f"{mtype}:{target}:{rendered.reply_id}" if rendered.reply_id else None
        mentions = mtype == "private" or rendered.mentions_self or (reply_to is not None and reply_to in self._ours)
        stamp = event.get("time")
        when = datetime.fromtimestamp(float(stamp), UTC) if isinstance(stamp, int | float) else datetime.now(UTC)
        return InboundMessage(chat=chat, sender=sender, text=rendered.text, platform_id=platform_id, time=when,
                              sender_id=user_id, mentions_bot=mentions, reply_to=reply_to)

    async def _fetch_missed(self, conn: _Connection, submit: Submit) -> None:
        """After a connect (a reconnect, or the first one after a restart): what was said since the
        mark of every chat that has one, where the implementation has the history actions."""
        try:
            for chat, mark in sorted(self.marks.items(), key=lambda item: mark_order(item[1]), reverse=True):
                try:
                    kind, target = parse_chat(chat)
                except ChannelError:
                    log.warning("qq: ignoring the catch-up mark of %r (not a QQ chat)", chat)
                    continue
                action, key = (("get_group_msg_history", "group_id") if kind == "group"
                               else ("get_friend_msg_history", "user_id"))
                if action in self._history_unsupported:
                    continue
                started = trio.current_time()
                try:
                    found, pages, cut = await self._history(conn, action, {key: target}, mark_order(mark)[0])
                except ActionFailed as exc:
                    if exc.retcode in FATAL_RETCODES:
                        self._history_unsupported.add(action)
                        log.warning("qq: the OneBot implementation has no %s (%s); messages sent while the daemon "
                                    "was away are not fetched", action, exc)
                    else:
                        log.warning("qq: could not fetch missed messages of %s: %s", chat, exc)
                    continue
                except (TimeoutError, trio.TooSlowError) as exc:
                    log.warning("qq: could not fetch missed messages of %s: %s", chat, type(exc).__name__)
                    continue
                for event in found:
                    event.setdefault("post_type", "message")
                    event.setdefault("message_type", kind)
                    if kind == "group":
                        event.setdefault("group_id", target)
                    await self._event(event, submit, fetched=True)
                line = (f"qq: caught up {chat} since {mark}: {len(found)} message(s) in {pages} page(s), "
                        f"{trio.current_time() - started:.1f}s")
                if cut:
                    log.warning("%s; stopped early (%s): older messages were not fetched", line, cut)
                else:
                    log.info("%s", line)
        finally:
            self.catch_ups += 1

    async def _history(self, conn: _Connection, action: str, peer: dict[str, Any],
                       since: int) -> tuple[list[dict[str, Any]], int, str | None]:
        """The history of one chat back to second ``since`` (inclusive), oldest first, paging back
        with ``message_seq`` (NapCat: a message id; go-cqhttp: QQ's sequence number; each gives its
        own in the ``message_seq`` of the messages it answers). Returns (messages, pages, why it
        stopped early or None). ActionFailed from the first page is raised; from a later one, the
        pages so far are kept."""
        found: list[dict[str, Any]] = []  # in chat order: each page is older than the ones before
        seen: set[str] = set()
        params: dict[str, Any] = {**peer, "count": HISTORY_COUNT}
        pages = 0

        def since_mark() -> list[dict[str, Any]]:
            return chat_order([m for m in found if _event_time(m) >= since])

        while True:
            if pages >= self.settings.catch_up_pages:
                return since_mark(), pages, f"page limit ({pages} pages)"
            try:
                data = await conn.call(action, params, self.settings.api_timeout) or {}
            except ActionFailed as exc:
                if pages == 0:
                    raise
                return since_mark(), pages, f"page {pages + 1}: {exc}"
            pages += 1
            messages = data.get("messages") if isinstance(data, dict) else None
            new = [m for m in messages or [] if isinstance(m, dict) and m.get("message_id") is not None
                   and str(m["message_id"]) not in seen]
            seen.update(str(m["message_id"]) for m in new)
            found[:0] = new
            if not new:  # the start of the history, or an implementation that does not page
                return since_mark(), pages, None
            oldest = chat_order(new)[0]
            if _event_time(oldest) < since:
                return since_mark(), pages, None  # reached the mark
            start = oldest.get("message_seq", oldest.get("message_id"))
            params = {**peer, "message_seq": start, "count": HISTORY_COUNT}

    # -- outbound --------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        kind, target = parse_chat(chat)
        conn = self._conn
        if conn is None:
            raise ChannelError(f"qq is {self.state}", retryable=True)
        quote = _message_id_in(reply_to or self._last_trigger.get(chat), kind, target)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(markdown_to_plain(text), self.settings.part_limit)
        for index in range(len(ids), len(parts)):
            message: list[dict[str, Any]] = []
            if index == 0 and quote:
                message.append({"type": "reply", "data": {"id": quote}})
            message.append({"type": "text", "data": {"text": parts[index]}})
            params: dict[str, Any] = {"message_type": kind, "message": message}
            params["group_id" if kind == "group" else "user_id"] = target
            try:
                data = await conn.call("send_msg", params, self.settings.api_timeout)
            except ActionFailed as exc:
                raise ChannelError(f"qq: {exc}", retryable=exc.retcode not in FATAL_RETCODES) from None
            except (TimeoutError, trio.TooSlowError):
                raise ChannelError("qq: send_msg got no answer in time", retryable=True) from None
            except ConnectionError as exc:
                raise ChannelError(f"qq: {exc}", retryable=True) from None
            message_id = data.get("message_id") if isinstance(data, dict) else None
            platform_id = f"{kind}:{target}:{message_id}" if message_id is not None else ""
            if platform_id:
                self._ours.put(platform_id, True)
            ids.append(platform_id)
            self._partial.record(key, platform_id)
        self._partial.finish(key)
        return next((i for i in ids if i), None)


def _message_id_in(platform_id: str | None, kind: str, target: int) -> str | None:
    """The message id inside "group:<id>:<message id>" when it belongs to this chat."""
    if not platform_id:
        return None
    pkind, _, rest = platform_id.partition(":")
    ptarget, _, message_id = rest.partition(":")
    if pkind != kind or ptarget != str(target) or not message_id.lstrip("-").isdigit():
        return None
    return message_id
