"""A local fake of Discord: REST (``/api/v10``) and the gateway websocket on one loopback port,
speaking their real wire formats, so discord.py talks to it unchanged (``Route.BASE`` and the
gateway URL pointed here).

Gateway: HELLO (heartbeat_interval), IDENTIFY -> READY (session_id, resume_gateway_url, one
unavailable guild) + GUILD_CREATE, HEARTBEAT -> HEARTBEAT_ACK, RESUME -> the missed dispatches
after the given sequence + RESUMED (or INVALID_SESSION when the session is unknown), dispatches
MESSAGE_CREATE; zlib-stream compression when asked (``compress=zlib-stream``). Events of a session
that has no socket wait for its RESUME (as Discord buffers them). A client may leave at any
moment: what was still to be written to it is dropped (never raised), and stays in its session's
log for a RESUME. A token that is wrong gets close code 4004 (gateway) / 401 (REST); missing
MESSAGE_CONTENT intent gives messages with empty content, as Discord does;
``privileged_intents_allowed = False`` closes with 4014.

REST: GET /users/@me, GET /oauth2/applications/@me, GET /gateway/bot, GET /channels/{id} (a guild
text channel, or a DM with alice), POST /channels/{id}/messages (2,000-character limit,
``nonce`` + ``enforce_nonce``: a repeated nonce returns the first message and creates none),
GET /channels/{id}/messages (after/before/limit 1-100, newest first; as on Discord, without the
gateway-only ``guild_id`` and ``member``; each query kept in ``history_queries``), PATCH
/channels/{id}/messages/{id} (an edit of the bot's own message: 404 Unknown Message, code 10008, for
one that is not there, e.g. after ``delete_message``; MESSAGE_UPDATE dispatched; each edit in
``edits``, every content a message showed in ``versions(channel, message id)``), POST
/channels/{id}/typing.
Threads (a thread is a channel with a ``parent_id``) and reactions (the bot's through REST, people's
through the gateway): tests/fakes/discord_threads.py.
Files (tests/fakes/discord_files.py): multipart message creates (``payload_json`` + ``files[n]``;
over ``upload_limit`` 413), every message's attachments served as Discord's CDN serves them.
Each created message's ``pinged`` is who Discord would notify, by its rules for ``allowed_mentions``
(``pinged()``): without it, every ``@everyone``/``@here``, role ``<@&id>`` and user ``<@id>`` in the
content pings, and a reply pings the replied-to author; with it, only what its ``parse`` list,
``users``/``roles`` lists and ``replied_user`` allow.

Scripting::

    fake = await FakeDiscord.start(nursery)
    fake.user_message(CHANNEL, "hi <@BOT_ID>")   # MESSAGE_CREATE (mentions filled in)
    fake.user_message(CHANNEL, "look", attachments=[fake.attachment(CHANNEL, "cat.png", png_bytes)])
    fake.fail_next("GET /attachments", 500)     # the next CDN download fails
    fake.sent                                  # messages the bot created
    fake.drop(); fake.invalidate_sessions(); fake.down(); fake.up()
    fake.replay_on_resume = False              # a RESUME replays nothing missed: only the history has it
    fake.history_queries                       # (channel, query) of each history read
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import trio

from .discord_files import IS_VOICE_MESSAGE, FakeDiscordCdn, read_body
from .discord_pings import pinged
from .discord_threads import FakeDiscordThreads
from .wsserver import HttpRequest, HttpWsServer, WebSocket

__all__ = ["BOT_ID", "IS_VOICE_MESSAGE", "FakeDiscord", "pinged"]

TEXT_LIMIT = 2000
GUILD_ID = 900000000000000001
BOT_ID = 910000000000000001
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DM_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
_EPOCH = 1420070400000


class _Session:
    def __init__(self, session_id: str, intents: int) -> None:
        self.id = session_id
        self.intents = intents
        self.seq = 0
        self.log: list[dict[str, Any]] = []  # every dispatch, with its "s"
        self.ws: WebSocket | None = None
        self.wake = trio.Event()

    def add(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        self.log.append({"op": 0, "t": event, "s": self.seq, "d": data})
        self.log = self.log[-1000:]
        self.wake.set()
        self.wake = trio.Event()


class FakeDiscord(FakeDiscordThreads, FakeDiscordCdn, HttpWsServer):
    def __init__(self, *, token: str = "TEST.discord.token", heartbeat_ms: int = 41250,
                 channels: tuple[int, ...] = (920000000000000001,)) -> None:
        super().__init__()
        self.token = token
        self.heartbeat_ms = heartbeat_ms
        self.bot = {"id": str(BOT_ID), "username": "andy", "discriminator": "0", "global_name": "Andy",
                    "avatar": None, "bot": True, "flags": 0}
        self.guild_id = GUILD_ID
        self.guild_channels = list(channels)
        self.sessions: dict[str, _Session] = {}
        self.messages: dict[int, list[dict[str, Any]]] = {}  # channel -> messages, oldest first
        self.sent: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.history_queries: list[tuple[int, dict[str, str]]] = []  # GET /channels/{id}/messages
        self.edits: list[dict[str, Any]] = []  # every successful edit: channel_id, message_id, content, body
        self.nonces: dict[str, dict[str, Any]] = {}
        self.identifies = 0
        self.resumes = 0
        self.heartbeats = 0
        self.privileged_intents_allowed = True
        self.replay_on_resume = True  # False: a RESUME replays nothing missed (only the history has it)
        self._ids = itertools.count(int(time.time() * 1000 - _EPOCH) << 22)
        self._failures: dict[str, list[int]] = {}
        self._changed = trio.Event()
        self.init_threads()

    @classmethod
    async def start(cls, nursery: trio.Nursery, **kw: Any) -> FakeDiscord:
        fake = cls(**kw)
        await nursery.start(fake.serve)
        return fake

    @property
    def api_base(self) -> str:
        return f"{self.http_base}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"{self.ws_base}/gateway"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def next_id(self) -> int:
        return next(self._ids)

    def fail_next(self, route: str, status: int, times: int = 1) -> None:
        """The next ``times`` calls of ``route`` (e.g. "POST /channels/messages") fail with ``status``."""
        self._failures.setdefault(route, []).extend([status] * times)

    def invalidate_sessions(self) -> None:
        """Forget every session: the next RESUME gets INVALID_SESSION (d=false)."""
        self.sessions.clear()

    @property
    def connected(self) -> bool:
        return any(s.ws is not None and not s.ws.closed for s in self.sessions.values())

    # -- users' traffic --------------------------------------------------------------------------
    def user(self, user_id: int = 930000000000000001, name: str = "alice") -> dict[str, Any]:
        return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name.title(),
                "avatar": None}

    def user_message(self, channel_id: int, content: str, *, author: dict[str, Any] | None = None,
                     reply_to: dict[str, Any] | None = None, dm: bool | None = None,
                     attachments: list[dict[str, Any]] | None = None, flags: int = 0) -> dict[str, Any]:
        """A user posts in a channel (a DM when ``dm`` or the channel is not one of the guild's):
        stored, and MESSAGE_CREATE dispatched to every session."""
        dm = (not self.in_guild(channel_id)) if dm is None else dm
        author = author or self.user()
        mention_ids = re.findall(r"<@!?(\d+)>", content)
        mentions = [self.bot if mid == self.bot["id"] else self.user(int(mid), f"user{mid[-3:]}") for mid in mention_ids]
        message = self._message(channel_id, content, author, mentions=mentions, dm=dm, reply_to=reply_to)
        message["attachments"] = list(attachments or [])
        message["flags"] = flags
        self.messages.setdefault(channel_id, []).append(message)
        self.dispatch("MESSAGE_CREATE", message)
        return message

    def _message(self, channel_id: int, content: str, author: dict[str, Any], *, mentions: list[dict[str, Any]],
                 dm: bool, reply_to: dict[str, Any] | None = None, nonce: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": str(self.next_id()), "channel_id": str(channel_id), "author": author, "content": content,
            "timestamp": datetime.now(UTC).isoformat(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": mentions, "mention_roles": [], "attachments": [], "embeds": [],
            "pinned": False, "type": 19 if reply_to else 0, "flags": 0, "components": [],
        }
        if not dm:
            message["guild_id"] = str(GUILD_ID)
            if not author.get("bot"):
                message["member"] = {"roles": [], "joined_at": message["timestamp"], "deaf": False, "mute": False,
                                     "flags": 0}
        if reply_to is not None:
            message["message_reference"] = {"type": 0, "message_id": reply_to["id"], "channel_id": str(channel_id),
                                            **({} if dm else {"guild_id": str(GUILD_ID)})}
            message["referenced_message"] = reply_to
        if nonce is not None:
            message["nonce"] = nonce
        return message

    def dispatch(self, event: str, data: dict[str, Any], *, intent: int = 0) -> None:
        """``event`` to every session (that asked for ``intent``, when one is given)."""
        for session in self.sessions.values():
            if intent and not session.intents & intent:
                continue
            payload = data
            if event == "MESSAGE_CREATE" and not session.intents & INTENT_MESSAGE_CONTENT \
                    and data["author"]["id"] != self.bot["id"] and "guild_id" in data \
                    and not any(m["id"] == self.bot["id"] for m in data["mentions"]):
                payload = {**data, "content": "", "embeds": [], "attachments": []}  # no intent: no content
            session.add(event, payload)
        self._notify()

    # -- gateway -----------------------------------------------------------------------------------
    async def websocket(self, ws: WebSocket) -> None:
        compress = ws.query.get("compress") == "zlib-stream"
        deflate = zlib.compressobj() if compress else None
        send_lock = trio.Lock()  # one zlib stream: compress and send each payload as one step, in order

        async def send(payload: dict[str, Any]) -> None:
            data = json.dumps(payload)
            async with send_lock:  # (a send to a client that left is dropped by the WebSocket)
                if deflate is not None:
                    await ws.send_bytes(deflate.compress(data.encode()) + deflate.flush(zlib.Z_SYNC_FLUSH))
                else:
                    await ws.send_text(data)

        await send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}, "s": None, "t": None})
        session: _Session | None = None
        sent_up_to = 0
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                nonlocal sent_up_to
                assert session is not None
                while not ws.closed:
                    wake = session.wake  # taken before reading the log: an event added while we
                    for payload in [p for p in session.log if p["s"] > sent_up_to]:  # send sets it
                        await send(payload)
                        sent_up_to = payload["s"]
                    await wake.wait()

            while (raw := await ws.receive()) is not None:
                msg = json.loads(raw)
                op, d = msg.get("op"), msg.get("d")
                if op == 1:  # heartbeat
                    self.heartbeats += 1
                    await send({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:  # identify
                    if d.get("token") != self.token:
                        await ws.close(4004, "Authentication failed.")
                        break
                    intents = int(d.get("intents", 0))
                    if intents & INTENT_MESSAGE_CONTENT and not self.privileged_intents_allowed:
                        await ws.close(4014, "Disallowed intent(s).")
                        break
                    self.identifies += 1
                    session = _Session(uuid.uuid4().hex, intents)
                    self.sessions[session.id] = session
                    session.ws = ws
                    session.add("READY", {
                        "v": 10, "user": self.bot, "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                        "session_id": session.id, "resume_gateway_url": self.gateway_url, "private_channels": [],
                        "relationships": [], "application": {"id": self.bot["id"], "flags": 0},
                        "user_settings": {}, "presences": [], "guild_join_requests": [], "geo_ordered_rtc_regions": [],
                    })
                    session.add("GUILD_CREATE", self._guild())
                    nursery.start_soon(writer)
                elif op == 6:  # resume
                    known = self.sessions.get(str(d.get("session_id")))
                    if d.get("token") != self.token:
                        await ws.close(4004, "Authentication failed.")
                        break
                    if known is None:
                        await send({"op": 9, "d": False, "s": None, "t": None})
                        continue
                    self.resumes += 1
                    session = known
                    if session.ws is not None and session.ws is not ws:
                        await session.ws.close(4000, "replaced")
                    session.ws = ws
                    sent_up_to = int(d.get("seq") or 0) if self.replay_on_resume else session.seq
                    session.add("RESUMED", {})
                    nursery.start_soon(writer)
            nursery.cancel_scope.cancel()
        if session is not None and session.ws is ws:
            session.ws = None

    def _channel(self, channel_id: int) -> dict[str, Any]:
        if channel_id in self.threads:
            return self.threads[channel_id]
        if channel_id in self.guild_channels:
            i = self.guild_channels.index(channel_id)
            return {"id": str(channel_id), "type": 0, "name": f"general-{i}", "position": i, "guild_id": str(GUILD_ID),
                    "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None,
                    "rate_limit_per_user": 0, "last_message_id": None}
        return {"id": str(channel_id), "type": 1, "recipients": [self.user()], "last_message_id": None}

    def _guild(self) -> dict[str, Any]:
        channels = [self._channel(cid) for cid in self.guild_channels]
        return {"id": str(GUILD_ID), "name": "Fake Guild", "icon": None, "owner_id": "1", "unavailable": False,
                "member_count": 2, "large": False, "features": [], "roles": [
                    {"id": str(GUILD_ID), "name": "@everyone", "permissions": "1071698660929", "position": 0,
                     "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}],
                "emojis": [], "stickers": [], "channels": channels, "threads": list(self.threads.values()), "members": [], "voice_states": [],
                "presences": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
                "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
                "mfa_level": 0, "system_channel_flags": 0, "premium_tier": 0, "nsfw_level": 0,
                "preferred_locale": "en-US", "joined_at": datetime.now(UTC).isoformat()}

    # -- REST ----------------------------------------------------------------------------------------
    async def http(self, request: HttpRequest) -> tuple[int, Any]:
        if request.path.startswith("/attachments/"):
            return self._cdn(request)
        if not request.path.startswith("/api/v10/"):
            return 404, {"message": "404: Not Found", "code": 0}
        path = request.path[len("/api/v10"):]
        route = f"{request.method} {re.sub(r'/[0-9]+', '', path)}"
        try:
            body, files = read_body(request)
        except ValueError as exc:
            return 400, {"message": f"Invalid Form Body ({exc})", "code": 50035}
        self.requests.append((request.method, path, body))
        if request.headers.get("authorization") != f"Bot {self.token}":
            return 401, {"message": "401: Unauthorized", "code": 0}
        failures = self._failures.get(route)
        if failures:
            status = failures.pop(0)
            return status, {"message": f"fake failure {status}", "code": 0}
        if path == "/users/@me":
            return 200, self.bot
        if path == "/oauth2/applications/@me":
            return 200, {"id": self.bot["id"], "name": "Andy", "icon": None, "description": "", "bot_public": False,
                         "bot_require_code_grant": False, "owner": self.user(1, "owner"), "verify_key": "0" * 64,
                         "flags": 0, "team": None, "summary": "", "rpc_origins": []}
        if path == "/gateway/bot":
            return 200, {"url": self.gateway_url, "shards": 1,
                         "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}
        m = re.fullmatch(r"/channels/(\d+)", path)
        if m and request.method == "GET":
            return 200, self._channel(int(m.group(1)))
        m = re.fullmatch(r"/users/(\d+)", path)
        if m:
            return 200, self.user(int(m.group(1)), "alice" if int(m.group(1)) == int(self.user()["id"]) else "someone")
        m = re.fullmatch(r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", path)
        if m and request.method in ("PUT", "DELETE"):
            return self.reaction_http(request.method, int(m.group(1)), m.group(2), unquote(m.group(3)))
        m = re.fullmatch(r"/channels/(\d+)/messages/(\d+)", path)
        if m and request.method == "PATCH":
            return self._edit_message(int(m.group(1)), m.group(2), body or {})
        m = re.fullmatch(r"/channels/(\d+)/(messages|typing)", path)
        if m:
            channel_id = int(m.group(1))
            if m.group(2) == "typing":
                return 204, b""
            if request.method == "POST":
                return self._create_message(channel_id, body or {}, files)
            return self._list_messages(channel_id, request.query)
        return 404, {"message": "404: Not Found", "code": 10000}

    def _create_message(self, channel_id: int, body: dict[str, Any], files: list[dict[str, Any]]) -> tuple[int, Any]:
        content = str(body.get("content") or "")
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce") and str(nonce) in self.nonces:
            return 200, self.nonces[str(nonce)]  # Discord: the message this nonce already created
        if any(len(f["bytes"]) > self.upload_limit for f in files):
            return 413, {"message": "Request entity too large", "code": 40005}
        if not content.strip() and not files:
            return 400, {"message": "Cannot send an empty message", "code": 50006}
        if len(content) > TEXT_LIMIT:
            return 400, {"message": "Invalid Form Body", "code": 50035, "errors": {"content": {"_errors": [
                {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}
        reply = None
        ref = body.get("message_reference")
        if ref:
            reply = next((m for m in self.messages.get(channel_id, []) if m["id"] == str(ref["message_id"])), None)
            if reply is None and ref.get("fail_if_not_exists", True):
                return 400, {"message": "Invalid Form Body", "code": 50035}
        message = self._message(channel_id, content, self.bot, mentions=[], dm=not self.in_guild(channel_id),
                                reply_to=reply, nonce=str(nonce) if nonce is not None else None)
        message["attachments"] = [self.attachment(channel_id, f["filename"], f["bytes"], content_type=f["content_type"])
                                  for f in files]
        self.messages.setdefault(channel_id, []).append(message)
        if nonce is not None:
            self.nonces[str(nonce)] = message
        self.sent.append({"channel_id": channel_id, "content": content, "body": body, "message": message,
                          "reply_to": int(ref["message_id"]) if ref else None, "message_reference": ref,
                          "files": files,
                          "pinged": pinged(content, body.get("allowed_mentions"), reply)})
        self.dispatch("MESSAGE_CREATE", message)  # the bot sees its own messages, as on Discord
        return 200, message

    def _edit_message(self, channel_id: int, message_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        message = next((m for m in self.messages.get(channel_id, []) if m["id"] == message_id), None)
        if message is None:
            return 404, {"message": "Unknown Message", "code": 10008}
        if message["author"]["id"] != self.bot["id"]:
            return 403, {"message": "Cannot edit a message authored by another user", "code": 50005}
        if "content" in body:
            content = str(body.get("content") or "")
            if len(content) > TEXT_LIMIT:
                return 400, {"message": "Invalid Form Body", "code": 50035, "errors": {"content": {"_errors": [
                    {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}
            if not content.strip() and not message["attachments"]:
                return 400, {"message": "Cannot send an empty message", "code": 50006}
            message["content"] = content
        message["edited_timestamp"] = datetime.now(UTC).isoformat()
        self.edits.append({"channel_id": channel_id, "message_id": int(message_id), "content": message["content"],
                           "body": body})
        self.dispatch("MESSAGE_UPDATE", message)
        return 200, message

    def delete_message(self, channel_id: int, message_id: int) -> None:
        """A person deletes a message."""
        self.messages[channel_id] = [m for m in self.messages.get(channel_id, []) if m["id"] != str(message_id)]

    def versions(self, channel_id: int, message_id: int) -> list[str]:
        """Every content the bot's message showed, as created and after each edit, in order."""
        first = [s["content"] for s in self.sent if (s["channel_id"], s["message"]["id"]) == (channel_id, str(message_id))]
        return first + [e["content"] for e in self.edits if (e["channel_id"], e["message_id"]) == (channel_id, message_id)]

    def _list_messages(self, channel_id: int, query: dict[str, str]) -> tuple[int, Any]:
        self.history_queries.append((channel_id, dict(query)))
        msgs = self.messages.get(channel_id, [])
        if "after" in query:
            msgs = [m for m in msgs if int(m["id"]) > int(query["after"])]
        if "before" in query:
            msgs = [m for m in msgs if int(m["id"]) < int(query["before"])]
        limit = int(query.get("limit", 50))
        if not 1 <= limit <= 100:
            return 400, {"message": "Invalid Form Body", "code": 50035, "errors": {"limit": {"_errors": [
                {"code": "NUMBER_TYPE_MAX", "message": "int value should be less than or equal to 100."}]}}}
        if "after" in query:
            msgs = msgs[:limit]  # the oldest ones after the id ...
        else:
            msgs = msgs[-limit:]
        gateway_only = ("guild_id", "member")  # REST messages carry neither: the channel tells the guild
        return 200, [{k: v for k, v in m.items() if k not in gateway_only} for m in reversed(msgs)]  # newest first


def main() -> None:
    parser = argparse.ArgumentParser(description="fake Discord REST + gateway")
    parser.add_argument("--port", type=int, default=8083)
    args = parser.parse_args()

    async def run() -> None:
        fake = FakeDiscord()
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: fake.serve(port=args.port, task_status=task_status))
            print(f"fake Discord: NGB_DISCORD_TOKEN={fake.token} NGB_CHANNELS='{{\"discord\": {{\"api_base\": "
                  f"\"{fake.api_base}\", \"gateway_url\": \"{fake.gateway_url}\"}}}}'", flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
