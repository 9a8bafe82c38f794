"""A local fake of Slack: the Web API and a Socket Mode websocket on one loopback port, speaking
their real wire formats, so slack-sdk's ``AsyncWebClient`` and its aiohttp ``SocketModeClient``
talk to it unchanged (``AsyncWebClient(token, base_url=fake.base_url)``).

Web API (POST/GET, form or JSON, ``Authorization: Bearer``; errors are HTTP 200 with
``{"ok": false, "error": ...}`` like Slack): auth.test, apps.connections.open (app token) ->
``ws://.../link/?ticket=...``, chat.postMessage (40,000-character hard limit, thread_ts),
chat.update (the bot's own messages: ``message_not_found`` for one that is not there, e.g. after
``delete_message``, ``cant_update_message`` for another's; each update in ``edits``, every text a
message showed in ``versions(channel, ts)``),
conversations.history (oldest/latest/inclusive/limit/cursor, newest first, thread replies excluded;
a thread's parent carries reply_count/reply_users/latest_reply), conversations.replies (the parent
first on every page, then the replies in oldest/latest, oldest first, limit/cursor), users.info;
files.info, files.getUploadURLExternal / the upload URL / files.completeUploadExternal;
reactions.add / reactions.remove with their reaction_added / reaction_removed events
(tests/fakes/slack_reactions.py); anything else ``{"ok": true}``. Pages are Slack's: at most ``min(limit, max_page)`` items (Slack caps
``limit``: 999 for history, and 15 for apps under the 2025 limits), ``has_more`` and an opaque
``response_metadata.next_cursor`` while more remain; a cursor not from us is ``invalid_cursor``.

Files (tests/fakes/slack_files.py): ``add_file`` keeps bytes as a Slack file, served to the bot
token only (anyone else gets Slack's HTML sign-in page); ``user_message(..., files=[...])`` posts a
``file_share`` message carrying them; uploads go Slack's three steps and ``uploads`` records each.

Socket Mode: on connect ``hello``; events as ``events_api`` envelopes that the client must ack
with ``{"envelope_id": ...}``. Unacked envelopes are redelivered on the next connection with
``retry_attempt`` + 1 (as Slack retries); events posted while no socket is open wait for one.
With ``lose_events_while_disconnected`` an event raised while no socket is open is never delivered
(Slack gives up on an app it cannot reach after a few retries; counted in ``events_lost``): only
conversations.history / .replies can find the message then. ``disconnect(reason)`` sends a
``disconnect`` message (Slack's "refresh_requested"), ``drop()`` cuts every connection (RST),
``down()``/``up()`` refuse new ones.

Scripting::

    fake = await FakeSlack.start(nursery)
    fake.user_message("C1", "hi <@UBOT>")      # message (+ app_mention) events
    fake.sent                                  # chat.postMessage calls
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import time
import uuid
from typing import Any

import trio

from .slack_files import FakeSlackFiles
from .slack_reactions import FakeSlackReactions
from .wsserver import HttpRequest, HttpWsServer, WebSocket

HARD_LIMIT = 40_000
AUTH_ERRORS = "invalid_auth"


class FakeSlack(FakeSlackReactions, FakeSlackFiles, HttpWsServer):
    def __init__(self, *, bot_token: str = "xoxb-test", app_token: str = "xapp-test",
                 bot_user: str = "UBOT", bot_name: str = "andy") -> None:
        super().__init__()
        self.bot_token = bot_token
        self.app_token = app_token
        self.bot_user = bot_user
        self.bot_id = "BBOT"
        self.bot_name = bot_name
        self.team = "T0001"
        self.sent: list[dict[str, Any]] = []
        self.edits: list[dict[str, Any]] = []  # every successful chat.update: channel, ts, text, params
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.history: dict[str, list[dict[str, Any]]] = {}  # channel -> messages (oldest first)
        self.users: dict[str, dict[str, Any]] = {}
        self.pending: list[dict[str, Any]] = []  # envelopes not yet acked, in order
        self.acked: list[str] = []
        self.delivered = 0  # envelopes written to a socket
        self.hellos = 0
        self.redeliver_unacked = True
        self.lose_events_while_disconnected = False
        self.events_lost = 0
        self.max_page = 999  # Slack's own cap on `limit` (15 for non-Marketplace apps since 2025)
        self.init_files()
        self.init_reactions()
        self._failures: dict[str, list[str]] = {}
        self.lose_answers: dict[str, int] = {}  # method -> how many of its next calls are done, their answer cut
        self._ts = itertools.count(1)
        self._changed = trio.Event()
        self._ws: WebSocket | None = None

    @classmethod
    async def start(cls, nursery: trio.Nursery, **kw: Any) -> FakeSlack:
        fake = cls(**kw)
        await nursery.start(fake.serve)
        return fake

    @property
    def base_url(self) -> str:
        return f"{self.http_base}/api/"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def lose_next_answer(self, method: str, times: int = 1) -> None:
        """The next calls of ``method`` are carried out, then the connection is cut before the
        answer (as when a network drops after Slack took the request)."""
        self.lose_answers[method] = self.lose_answers.get(method, 0) + times

    def fail_next(self, method: str, error: str, times: int = 1) -> None:
        self._failures.setdefault(method, []).extend([error] * times)

    def clear_failures(self) -> None:
        self._failures.clear()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    # -- users' traffic --------------------------------------------------------------------------
    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def add_user(self, user_id: str, name: str) -> None:
        self.users[user_id] = {"id": user_id, "name": name.lower(), "real_name": name,
                               "profile": {"display_name": name, "real_name": name}}

    def user_message(self, channel: str, text: str, *, user: str = "U1001", thread_ts: str | None = None,
                     channel_type: str | None = None, mention_event: bool = True,
                     files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A user posts: stored in the channel's history; a ``message`` event (and an
        ``app_mention`` event when the text mentions the bot, as Slack sends both) is queued.
        With ``files`` (file objects from ``add_file``) it is a ``file_share`` message."""
        if user not in self.users:
            self.add_user(user, "Alice" if user == "U1001" else user)
        channel_type = channel_type or ("im" if channel.startswith("D") else "channel")
        ts = self.next_ts()
        message: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts, "team": self.team,
                                   "client_msg_id": str(uuid.uuid4())}
        if thread_ts:
            message["thread_ts"] = thread_ts
        if files:
            message.update({"subtype": "file_share", "files": files, "upload": False, "display_as_bot": False})
        self._add(channel, message)
        event = {**message, "channel": channel, "event_ts": ts, "channel_type": channel_type}
        if self.lose_events_while_disconnected and not self.connected:
            self.events_lost += 1
            return event
        self.push_event(event)
        if mention_event and f"<@{self.bot_user}>" in text and channel_type != "im":
            self.push_event({**{k: v for k, v in event.items() if k != "channel_type"}, "type": "app_mention"})
        return event

    def _add(self, channel: str, message: dict[str, Any]) -> None:
        """Into the channel's history; a reply also updates its parent as Slack does."""
        history = self.history.setdefault(channel, [])
        history.append(message)
        root = message.get("thread_ts")
        if root and root != message["ts"]:
            parent = next((m for m in history if m["ts"] == root), None)
            if parent is not None:
                parent["thread_ts"] = root
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                users = parent.setdefault("reply_users", [])
                if message["user"] not in users:
                    users.append(message["user"])
                parent["reply_users_count"] = len(users)
                parent["latest_reply"] = message["ts"]

    def push_event(self, event: dict[str, Any]) -> dict[str, Any]:
        envelope = {
            "envelope_id": str(uuid.uuid4()),
            "payload": {"token": "verification", "team_id": self.team, "api_app_id": "A0001", "event": event,
                        "type": "event_callback", "event_id": "Ev" + uuid.uuid4().hex[:10].upper(),
                        "event_time": int(time.time())},
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        self.pending.append(envelope)
        self._notify()
        return envelope

    def redeliver(self, envelope: dict[str, Any]) -> None:
        """Send an envelope again (as Slack does when it saw no ack in time)."""
        again = {**envelope, "retry_attempt": envelope["retry_attempt"] + 1, "retry_reason": "timeout"}
        self.pending.append(again)
        self._notify()

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        if self._ws is not None:
            await _send(self._ws, {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}})

    # -- Socket Mode -------------------------------------------------------------------------------
    async def websocket(self, ws: WebSocket) -> None:
        if not ws.path.startswith("/link") or ws.query.get("ticket") is None:
            await ws.close(4001, "bad ticket")
            return
        previous, self._ws = self._ws, ws
        if previous is not None:
            await previous.close(1000)
        self.hellos += 1
        if not await _send(ws, {"type": "hello", "num_connections": 1,
                                "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                                "connection_info": {"app_id": "A0001"}}):
            if self._ws is ws:
                self._ws = None
            return
        written: set[str] = set()  # envelope ids written on this connection
        if self.redeliver_unacked:
            for env in self.pending:
                if env.get("_written"):
                    env["retry_attempt"] += 1
                    env["retry_reason"] = "timeout"
        async with trio.open_nursery() as nursery:

            async def read_acks() -> None:
                while (raw := await ws.receive()) is not None:
                    msg = json.loads(raw)
                    eid = msg.get("envelope_id")
                    if eid:
                        self.acked.append(eid)
                        self.pending = [e for e in self.pending if e["envelope_id"] != eid]
                        self._notify()
                nursery.cancel_scope.cancel()

            nursery.start_soon(read_acks)
            while not ws.closed and self._ws is ws:
                for env in list(self.pending):
                    if env["envelope_id"] in written:
                        continue
                    written.add(env["envelope_id"])
                    env["_written"] = True
                    if not await _send(ws, {k: v for k, v in env.items() if not k.startswith("_")}):
                        break  # the client went away: unacked, so sent again on its next connection
                    self.delivered += 1
                with trio.move_on_after(0.5):
                    await self._changed.wait()
            nursery.cancel_scope.cancel()
        if self._ws is ws:
            self._ws = None

    # -- Web API -------------------------------------------------------------------------------------
    async def http(self, request: HttpRequest) -> tuple[int, Any]:
        if request.path.startswith("/files-pri/"):
            return self._download(request)
        if request.path.startswith("/upload/v1/"):
            return self._upload(request)
        if not request.path.startswith("/api/"):
            return 404, {"ok": False, "error": "unknown_method"}
        method = request.path[len("/api/"):]
        params = request.params()
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or params.get("token", "")
        self.requests.append((method, params))
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        if not token:
            return 200, {"ok": False, "error": "not_authed"}
        if token != wanted:
            return 200, {"ok": False, "error": AUTH_ERRORS}
        failures = self._failures.get(method)
        if failures:
            error = failures.pop(0)
            if error == "ratelimited":
                return 429, ({"ok": False, "error": "ratelimited"}, [("retry-after", "1")])
            if error.isdigit():
                return int(error), {"ok": False, "error": "fatal_error"}
            return 200, {"ok": False, "error": error}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": True}
        answer = await handler(params)
        if self.lose_answers.get(method):
            self.lose_answers[method] -= 1
            raise trio.BrokenResourceError(f"the fake lost the answer to {method}")  # the connection is cut
        return answer

    async def _m_auth_test(self, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"ok": True, "url": "https://fake.slack.com/", "team": "Fake Team", "user": self.bot_name,
                     "team_id": self.team, "user_id": self.bot_user, "bot_id": self.bot_id, "is_enterprise_install": False}

    async def _m_apps_connections_open(self, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"ok": True, "url": f"{self.ws_base}/link/?ticket={uuid.uuid4()}&app_id=A0001"}

    async def _m_chat_postMessage(self, params: dict[str, Any]) -> tuple[int, Any]:
        channel = str(params.get("channel", ""))
        text = str(params.get("text") or "")
        if not channel:
            return 200, {"ok": False, "error": "channel_not_found"}
        if not text.strip() and not params.get("blocks"):
            return 200, {"ok": False, "error": "no_text"}
        if len(text) > HARD_LIMIT:
            return 200, {"ok": False, "error": "msg_too_long"}
        ts = self.next_ts()
        message: dict[str, Any] = {"type": "message", "user": self.bot_user, "bot_id": self.bot_id, "text": text,
                                   "ts": ts, "team": self.team}
        thread_ts = params.get("thread_ts") or None
        if thread_ts:
            message["thread_ts"] = str(thread_ts)
        metadata = params.get("metadata")
        if isinstance(metadata, str) and metadata:
            metadata = json.loads(metadata)
        if isinstance(metadata, dict):  # returned by history/replies with include_all_metadata only
            message["_metadata"] = metadata
        self._add(channel, message)
        self.sent.append({"params": params, "channel": channel, "text": text, "ts": ts, "thread_ts": thread_ts})
        self._notify()
        return 200, {"ok": True, "channel": channel, "ts": ts, "message": self._shown(message, {"include_all_metadata": 1})}

    async def _m_chat_update(self, params: dict[str, Any]) -> tuple[int, Any]:
        channel, ts = str(params.get("channel", "")), str(params.get("ts", ""))
        text = str(params.get("text") or "")
        message = next((m for m in self.history.get(channel, []) if m["ts"] == ts), None)
        if message is None:
            return 200, {"ok": False, "error": "message_not_found"}
        if message.get("user") != self.bot_user:
            return 200, {"ok": False, "error": "cant_update_message"}
        if not text.strip() and not params.get("blocks"):
            return 200, {"ok": False, "error": "no_text"}
        if len(text) > HARD_LIMIT:
            return 200, {"ok": False, "error": "msg_too_long"}
        message.update(text=text, edited={"user": self.bot_user, "ts": self.next_ts()})
        self.edits.append({"channel": channel, "ts": ts, "text": text, "params": params})
        self._notify()
        return 200, {"ok": True, "channel": channel, "ts": ts, "text": text, "message": message}

    def delete_message(self, channel: str, ts: str) -> None:
        """A person deletes a message (it leaves the channel's history)."""
        self.history[channel] = [m for m in self.history.get(channel, []) if m["ts"] != ts]

    def versions(self, channel: str, ts: str) -> list[str]:
        """Every text the bot's message showed, as posted and after each update, in order."""
        first = [s["text"] for s in self.sent if (s["channel"], s["ts"]) == (channel, ts)]
        return first + [e["text"] for e in self.edits if (e["channel"], e["ts"]) == (channel, ts)]

    def _page(self, params: dict[str, Any], items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        """One page of items (already in the method's order) after params' cursor: (page, the
        paging fields of the answer), or None for a cursor that is not ours."""
        start = 0
        cursor = str(params.get("cursor") or "")
        if cursor:
            try:
                after = base64.b64decode(cursor.encode(), validate=True).decode().removeprefix("next_ts:")
                start = next(i for i, m in enumerate(items) if m["ts"] == after)
            except (ValueError, StopIteration):
                return None
        limit = max(1, min(int(params.get("limit") or 100), self.max_page))
        page = items[start:start + limit]
        more = start + limit < len(items)
        paging: dict[str, Any] = {"has_more": more}
        if more:
            token = base64.b64encode(f"next_ts:{items[start + limit]['ts']}".encode()).decode()
            paging["response_metadata"] = {"next_cursor": token}
        return page, paging

    @staticmethod
    def _in_range(params: dict[str, Any], ts: str) -> bool:
        oldest = float(params.get("oldest") or 0)
        latest = float(params.get("latest") or 1e12)
        inclusive = str(params.get("inclusive", "false")).lower() in ("1", "true")
        return oldest <= float(ts) <= latest if inclusive else oldest < float(ts) < latest

    async def _m_conversations_history(self, params: dict[str, Any]) -> tuple[int, Any]:
        channel = str(params.get("channel", ""))
        if channel not in self.history:
            return 200, {"ok": False, "error": "channel_not_found"}
        msgs = [m for m in self.history[channel]
                if (not m.get("thread_ts") or m["thread_ts"] == m["ts"]) and self._in_range(params, m["ts"])]
        paged = self._page(params, sorted(msgs, key=lambda m: float(m["ts"]), reverse=True))
        if paged is None:
            return 200, {"ok": False, "error": "invalid_cursor"}
        page, paging = paged
        return 200, {"ok": True, "messages": [self._shown(m, params) for m in page], **paging}

    async def _m_conversations_replies(self, params: dict[str, Any]) -> tuple[int, Any]:
        channel = str(params.get("channel", ""))
        ts = str(params.get("ts", ""))
        found = [m for m in self.history.get(channel, []) if m["ts"] == ts]
        if not found:
            return 200, {"ok": False, "error": "thread_not_found"}
        root = found[0].get("thread_ts", ts)
        if found[0]["ts"] != root:  # a reply's ts: that message alone
            return 200, {"ok": True, "messages": [self._shown(found[0], params)], "has_more": False}
        replies = sorted((m for m in self.history[channel] if m.get("thread_ts") == root and m["ts"] != root
                          and self._in_range(params, m["ts"])), key=lambda m: float(m["ts"]))
        paged = self._page(params, replies)
        if paged is None:
            return 200, {"ok": False, "error": "invalid_cursor"}
        page, paging = paged
        return 200, {"ok": True, "messages": [self._shown(m, params) for m in [found[0], *page]], **paging}

    @staticmethod
    def _shown(message: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """A message as history/replies return it: its metadata only with include_all_metadata."""
        shown = {k: v for k, v in message.items() if not k.startswith("_")}
        if "_metadata" in message and str(params.get("include_all_metadata", "")).lower() in ("1", "true"):
            shown["metadata"] = message["_metadata"]
        return shown

    async def _m_users_info(self, params: dict[str, Any]) -> tuple[int, Any]:
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            return 200, {"ok": False, "error": "user_not_found"}
        return 200, {"ok": True, "user": user}


async def _send(ws: WebSocket, payload: dict[str, Any]) -> bool:
    """Send, or False when the client has gone away meanwhile (it may leave at any moment)."""
    try:
        await ws.send_json(payload)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        ws.closed = True
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description="fake Slack Web API + Socket Mode")
    parser.add_argument("--port", type=int, default=8082)
    args = parser.parse_args()

    async def run() -> None:
        fake = FakeSlack()
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: fake.serve(port=args.port, task_status=task_status))
            print(f"fake Slack: NGB_SLACK_BOT_TOKEN={fake.bot_token} NGB_SLACK_APP_TOKEN={fake.app_token} "
                  f"NGB_CHANNELS='{{\"slack\": {{\"base_url\": \"{fake.base_url}\"}}}}'", flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
