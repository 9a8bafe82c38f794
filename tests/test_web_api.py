"""The web API against a real Daemon with the in-process fake agent: health, status, metrics,
actor inspection, groups, messages + search, tasks, sessions, auth, CSRF, limits, headers."""

from __future__ import annotations

import base64
import hashlib
import re
import stat
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from ngb.config import ConfigError
from ngb.records import InboundMessage
from ngb.store import StoreUnavailable
from ngb.web.security import inline_script_hashes
from tests.fakes.agent import FakeBehaviour

TOKEN = "web-test-token-0123456789"


async def wait_for(predicate, timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.02)


async def ingest(d, chat: str, texts: list[str], sender: str = "bob") -> None:
    for i, text in enumerate(texts):
        await d.daemon.router.handle(InboundMessage(chat=chat, sender=sender, text=text, platform_id=f"{chat}-{i}-{text}"))


# -- health and status ------------------------------------------------------------------------
async def test_healthz_ok_then_503_with_reason(run_daemon, monkeypatch) -> None:
    d = await run_daemon()
    r = await d.http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True}
    d.daemon.supervisor.running = False
    r = await d.http.get("/healthz")
    assert r.status_code == 503 and "supervisor" in r.json()["reason"]
    d.daemon.supervisor.running = True

    async def broken(fn):
        raise StoreUnavailable("disk on fire")

    monkeypatch.setattr(d.daemon.store, "run", broken)
    r = await d.http.get("/healthz")
    assert r.status_code == 503 and "disk on fire" in r.json()["reason"]
    # /status still answers (with unknown DB-derived numbers), the API says 503 in JSON
    r = await d.http.get("/status")
    assert r.status_code == 200 and r.json()["queues"]["outbox"] is None
    r = await d.http.get("/api/tasks")
    assert r.status_code == 503 and "disk on fire" in r.json()["error"]


async def test_status_is_complete(run_daemon) -> None:
    d = await run_daemon()
    await d.post("main", "hi")
    await d.wait_bot_replies("main", 1)
    s = (await d.http.get("/status")).json()
    assert s["version"] and s["uptime_seconds"] >= 0 and s["started_at"].endswith("Z")
    assert s["channels"]["local"]["state"] == "connected"
    assert [g["folder"] for g in s["groups"]] == ["main"] and s["groups"][0]["state"]
    assert s["containers"]["cap"] == 5 and s["containers"]["live"] in (0, 1)
    assert set(s["queues"]) >= {"outbox", "outbox_failed", "inboxes", "waiting_for_slot"}
    assert s["queues"]["outbox"] == 0 and s["delivered"] == 1
    assert "last_error" in s


async def test_metrics_has_every_family(run_daemon) -> None:
    d = await run_daemon()
    await d.post("main", "hi")
    await d.wait_bot_replies("main", 1)
    text = (await d.http.get("/metrics")).text
    families = {f.name for f in text_string_to_metric_families(text)}
    expected = {
        "ngb_messages_in", "ngb_messages_out", "ngb_turns", "ngb_turn_first_reply_seconds",
        "ngb_reply_latency_seconds", "ngb_container_starts", "ngb_live_containers", "ngb_container_slots",
        "ngb_slot_wait_seconds", "ngb_actor_restarts", "ngb_actors", "ngb_actor_inbox_depth",
        "ngb_outbox_depth", "ngb_outbox_retries", "ngb_model_tokens", "ngb_task_runs", "ngb_errors",
        "ngb_channel_connected", "ngb_http_requests", "ngb_http_request_seconds", "ngb_build_info",
        "ngb_uptime_seconds", "ngb_store_write_retries",
    }
    assert expected <= families, expected - families
    assert re.search(r'ngb_turns_total\{group="main"\} 1\.0', text)
    assert re.search(r'ngb_container_starts_total\{group="main"\} 1\.0', text)
    assert re.search(r'ngb_channel_connected\{channel="local"\} 1\.0', text)
    assert re.search(r'ngb_errors_total\{kind="actor_crash"\} 0\.0', text)
    assert re.search(r"ngb_turn_first_reply_seconds_count 1\.0", text)


async def test_debug_actors_shows_a_running_turn(run_daemon) -> None:
    d = await run_daemon(FakeBehaviour(delay=1.0), NGB_IDLE_TIMEOUT="5", NGB_API_TOKEN=TOKEN)
    d.http.headers["Authorization"] = f"Bearer {TOKEN}"
    await d.post("main", "slow one")

    async def running() -> bool:
        a = (await d.http.get("/debug/actors/main")).json()
        return a["state"] == "running" and a["current_turn"] is not None

    await wait_for(running)
    await trio.sleep(0.2)
    a = (await d.http.get("/debug/actors/main")).json()
    assert a["container_id"] == "fake-1" and a["container_age_seconds"] >= 0
    assert a["session_id"] == "sess-main-1"
    assert a["current_turn"]["up_to_message"] >= 1 and a["current_turn"]["running_seconds"] >= 0.1
    assert a["unanswered_messages"] == 1 and a["oldest_message_age_seconds"] >= 0.1
    assert a["crash_count"] == 0 and a["last_crash"] is None
    assert a["task_tree"]["name"] == "actor:main" and a["task_tree"]["children"]
    listed = (await d.http.get("/debug/actors")).json()
    assert [x["folder"] for x in listed] == ["main"]
    assert (await d.http.get("/debug/actors/nope")).status_code == 404
    await d.wait_bot_replies("main", 1)
    for path in ("/debug/actors", "/status", "/metrics", "/api/groups", "/api/groups/local:main"):
        assert TOKEN not in (await d.http.get(path)).text, path


# -- auth, CSRF, headers, limits ---------------------------------------------------------------
PROTECTED_GETS = [
    "/status", "/metrics", "/debug/actors", "/api/groups", "/api/groups/local:main", "/api/sessions",
    "/api/messages?chat=local:main", "/api/search?q=hi", "/api/tasks", "/api/chats",
]


async def test_every_route_needs_the_token_when_set(run_daemon) -> None:
    d = await run_daemon(NGB_API_TOKEN=TOKEN)
    for path in PROTECTED_GETS:
        r = await d.http.get(path)
        assert r.status_code == 401 and "token" in r.json()["error"], path
    for method, path in [("POST", "/api/groups"), ("PATCH", "/api/groups/local:main"), ("DELETE", "/api/groups/local:main"),
                         ("POST", "/api/tasks"), ("DELETE", "/api/sessions/main")]:
        r = await d.http.request(method, path, json={})
        assert r.status_code == 401, (method, path)
    assert (await d.http.get("/healthz")).status_code == 200
    assert (await d.http.get("/dashboard")).status_code == 200
    r = await d.http.get("/status", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    for path in PROTECTED_GETS:
        r = await d.http.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, (path, r.text)
    # the pages' login: an HttpOnly SameSite cookie
    r = await d.http.post("/api/login", json={"token": TOKEN})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert (await d.http.get("/api/tasks")).status_code == 200
    # a cookie-authenticated POST must be JSON (a cross-site form cannot be)
    r = await d.http.post("/api/tasks/x/pause", content=b"a=1", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = await d.http.post("/api/tasks/x/pause", json={}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = await d.http.post("/api/tasks/x/pause", json={}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = await d.http.post("/api/tasks/x/pause", json={}, headers={"Origin": str(d.http.base_url).rstrip("/")})
    assert r.status_code == 404  # passed the checks; no such task
    await d.http.post("/api/logout", json={})
    assert (await d.http.get("/api/tasks")).status_code == 401


async def test_without_a_configured_token_one_is_generated_and_required(run_daemon) -> None:
    d = await run_daemon()  # no NGB_API_TOKEN
    path = d.daemon.config.state_dir / "secrets" / "api_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().strip() == d.token and len(d.token) >= 40
    async with d.anonymous() as anon:
        for p in PROTECTED_GETS:
            r = await anon.get(p)
            assert r.status_code == 401 and "token" in r.json()["error"], p
        r = await anon.get("/api/groups", headers={"Authorization": "Bearer not-the-token-0123456789"})
        assert r.status_code == 401
        assert (await anon.get("/healthz")).status_code == 200 and (await anon.get("/")).status_code == 200
    for p in PROTECTED_GETS:
        assert (await d.http.get(p)).status_code == 200, p  # Bearer <the generated token>
    # the generated token makes no exposed server: DNS rebinding (a page on evil.example resolving to
    # 127.0.0.1) is still refused on the Host header, whatever the token
    r = await d.http.get("/api/groups", headers={"Host": "evil.example:8640"})
    assert r.status_code == 421
    assert (await d.http.get("/api/groups", headers={"Host": "localhost"})).status_code == 200


def test_the_generated_token_is_kept_and_never_overwritten(tmp_path) -> None:
    from ngb.api_token import ensure_api_token
    from tests.conftest import make_config

    config = make_config(tmp_path)
    first = ensure_api_token(config)
    assert not first.configured and ensure_api_token(config).value == first.value  # the next start
    first.path.chmod(0o644)  # someone loosened it: refuse rather than serve a token others read
    with pytest.raises(ConfigError, match="chmod 600"):
        ensure_api_token(config)
    assert ensure_api_token(make_config(tmp_path, NGB_API_TOKEN=TOKEN)).value == TOKEN  # the env wins


async def test_login_is_rate_limited_per_address(run_daemon) -> None:
    d = await run_daemon()
    async with d.anonymous() as anon:
        for i in range(5):
            r = await anon.post("/api/login", json={"token": "wrong"})
            assert r.status_code == 401, i
        r = await anon.post("/api/login", json={"token": "wrong"})
        assert r.status_code == 429 and "try again" in r.json()["error"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # while locked, not even the right token is looked at by the login...
        r = await anon.post("/api/login", json={"token": d.token})
        assert r.status_code == 429 and "set-cookie" not in r.headers
        r = await anon.get("/", params={"token": d.token})
        assert r.status_code == 429 and "set-cookie" not in r.headers
    # ...but the API with its right token still answers (other local users cannot lock `ngb` out)
    assert (await d.http.get("/api/groups")).status_code == 200
    assert re.search(r'ngb_errors_total\{kind="web_auth"\} 5\.0', (await d.http.get("/metrics")).text)


async def test_bearer_guessing_counts_and_a_stale_cookie_does_not_lock_the_login(run_daemon) -> None:
    d = await run_daemon()
    async with d.anonymous() as anon:
        stale = {"Cookie": "ngb_token=an-old-token-from-a-previous-install"}
        for _ in range(8):  # one stale value, sent by every page request: one mistake
            assert (await anon.get("/api/chats", headers=stale)).status_code == 401
        r = await anon.post("/api/login", json={"token": d.token})
        assert r.status_code == 200
        assert (await anon.get("/api/chats")).status_code == 200
    async with d.anonymous() as guesser:
        for i in range(5):  # distinct guesses count
            r = await guesser.get("/api/chats", headers={"Authorization": f"Bearer guess-{i:02d}-0123456789"})
            assert r.status_code == 401
        r = await guesser.post("/api/login", json={"token": d.token})
        assert r.status_code == 429  # the login is locked for that address now


async def test_a_login_link_signs_in_and_drops_the_token_from_the_address(run_daemon) -> None:
    d = await run_daemon()
    async with d.anonymous() as browser:
        r = await browser.get("/", params={"token": d.token})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and d.token.lower() in cookie
        assert (await browser.get("/api/chats")).status_code == 200  # the cookie
        r = await browser.get("/dashboard", params={"token": d.token, "x": "1"})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard?x=1"
    async with d.anonymous() as stranger:
        r = await stranger.get("/", params={"token": "not-the-token-0123456789"})
        assert r.status_code == 303 and r.headers["location"] == "/" and "set-cookie" not in r.headers
        assert (await stranger.get("/api/chats")).status_code == 401


def test_wrong_tokens_window_frees_up() -> None:
    from ngb.web.security import WrongTokens

    now = [0.0]
    w = WrongTokens(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        w.record("a", "x")
    assert w.retry_after("a") == 60 and w.retry_after("b") is None
    now[0] = 30.0
    assert w.retry_after("a") == 30
    now[0] = 60.0
    assert w.retry_after("a") is None
    assert w.record("c", "same", distinct=True) == (1, True)
    assert w.record("c", "same", distinct=True) == (1, False)
    assert w.record("c", "same") == (2, True)


async def test_security_headers_and_csp_covers_inline_scripts(run_daemon) -> None:
    d = await run_daemon()
    for path in ("/", "/dashboard", "/api/groups", "/nope"):
        r = await d.http.get(path)
        h = r.headers
        assert h["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in h["content-security-policy"], path
        assert "'unsafe-inline'" not in h["content-security-policy"].split("script-src")[1].split(";")[0]
    page = (await d.http.get("/")).text
    body = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in r.headers["content-security-policy"]
    assert inline_script_hashes.__name__
    r = await d.http.get("/nope")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")


async def test_size_limits_and_reflected_input_is_json(run_daemon) -> None:
    d = await run_daemon()
    r = await d.http.post("/api/groups", json={"chat": "local:x", "folder": "x", "allowed_senders": ["a" * 100] * 1000})
    assert r.status_code == 413 and "error" in r.json()
    r = await d.http.get("/api/search", params={"q": "x" * 201})
    assert r.status_code == 400
    evil = "<script>alert(1)</script>"
    r = await d.http.get(f"/api/groups/local:{evil}")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")


# -- groups ----------------------------------------------------------------------------------
async def test_groups_add_settings_remove(run_daemon) -> None:
    d = await run_daemon(NGB_IDLE_TIMEOUT="0.1")
    r = await d.http.post("/api/groups", json={"chat": "local:team", "folder": "team", "trigger": "@Bot",
                                               "allowed_senders": ["bob"], "mounts": [{"host_path": "/srv/docs"}]})
    assert r.status_code == 201, r.text
    g = r.json()
    assert g["trigger"] == "@Bot" and g["allowed_senders"] == ["bob"]
    assert g["mounts"] == [{"host_path": "/srv/docs", "container_name": None, "read_write": False}]
    assert (await d.http.post("/api/groups", json={"chat": "local:team", "folder": "team2"})).status_code == 409
    one = (await d.http.get("/api/groups/local:team")).json()
    assert one["effective_trigger"] == "@Bot" and one["actor"]["state"] in ("idle", "waiting_slot", "starting", "running")
    # the trigger and the allowlist apply at once
    await d.post("team", "@Andy hello", sender="bob")
    await d.post("team", "@Bot hello", sender="carol")
    await trio.sleep(0.3)
    assert d.launcher.started == 0
    await d.post("team", "@Bot hello", sender="bob")
    await d.wait_bot_replies("team", 1)
    r = await d.http.patch("/api/groups/local:team", json={"trigger": None, "allowed_senders": []})
    assert r.status_code == 200 and r.json()["trigger"] is None and r.json()["effective_trigger"] == "@Andy"
    assert d.daemon.registry.get("local:team").allowed_senders == ()
    assert (await d.daemon.store.group("local:team")).trigger is None
    await d.post("team", "@Andy again", sender="carol")
    await d.wait_bot_replies("team", 2)
    r = await d.http.patch("/api/groups/local:team", json={"requires_trigger": False})
    assert r.json()["requires_trigger"] is False
    r = await d.http.delete("/api/groups/local:team")
    assert r.status_code == 200 and r.json()["folder"] == "team"
    assert (await d.http.get("/api/groups/local:team")).status_code == 404
    assert (await d.http.delete("/api/groups/local:team")).status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ([], "JSON object"),
        ({"chat": "local:a"}, "folder"),
        ({"chat": 5, "folder": "a"}, "$.chat"),
        ({"chat": "local:a", "folder": "a", "is_main": "yes"}, "$.is_main"),
        ({"chat": "local:a", "folder": "a", "colour": "red"}, "colour"),
        ({"chat": "local:a", "folder": "../etc"}, "folder"),
        ({"chat": "nocolon", "folder": "a"}, "<channel>:<id>"),
        ({"chat": "local:a", "folder": "a", "trigger": "two words"}, "one word"),
        ({"chat": "local:a", "folder": "a", "mounts": [{"host_path": "relative"}]}, "absolute"),
        ({"chat": "local:a", "folder": "a", "mounts": [{"path": "/x"}]}, "mounts"),
    ],
)
async def test_groups_bad_input(run_daemon, body: Any, needle: str) -> None:
    d = await run_daemon()
    r = await d.http.post("/api/groups", json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]
    assert [g["folder"] for g in (await d.http.get("/api/groups")).json()] == ["main"]


async def test_group_patch_bad_input(run_daemon) -> None:
    d = await run_daemon()
    for body in ({}, {"requires_trigger": None}, {"requires_trigger": "no"}, {"allowed_senders": "bob"}, {"folder": "x"}):
        r = await d.http.patch("/api/groups/local:main", json=body)
        assert r.status_code == 400, (body, r.text)
    assert (await d.http.patch("/api/groups/local:none", json={"trigger": "@X"})).status_code == 404
    r = await d.http.patch("/api/groups/local:main", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400


# -- sessions ---------------------------------------------------------------------------------
async def test_session_reset_starts_a_fresh_session(run_daemon) -> None:
    d = await run_daemon(NGB_IDLE_TIMEOUT="30")
    await d.post("main", "remember me")
    await d.wait_bot_replies("main", 1)
    assert await d.daemon.store.session_id("main") == "sess-main-1"
    assert (await d.http.get("/api/sessions")).json()[0]["session_id"] == "sess-main-1"
    r = await d.http.delete("/api/sessions/main")  # stops the idle container first
    assert r.status_code == 200 and r.json() == {"folder": "main", "reset": True, "previous_session_id": "sess-main-1"}
    assert d.launcher.live == 0 and await d.daemon.store.session_id("main") is None
    await d.post("main", "who am I?")
    await d.wait_bot_replies("main", 2)
    assert await d.daemon.store.session_id("main") == "sess-main-2"
    assert (await d.http.delete("/api/sessions/nope")).status_code == 404


async def test_session_reset_refused_mid_turn(run_daemon) -> None:
    d = await run_daemon(FakeBehaviour(delay=0.8), NGB_IDLE_TIMEOUT="5")
    await d.post("main", "slow")

    async def busy() -> bool:
        return bool(d.daemon.supervisor.actors["main"].view.current_batches)

    await wait_for(busy)
    r = await d.http.delete("/api/sessions/main")
    assert r.status_code == 409 and "answering" in r.json()["error"]


# -- messages and search ----------------------------------------------------------------------
async def test_messages_paging_any_channel(run_daemon) -> None:
    d = await run_daemon()
    await ingest(d, "telegram:-100", [f"note {i}" for i in range(12)])
    r = await d.http.get("/api/messages", params={"chat": "telegram:-100", "limit": 5})
    page = r.json()
    assert [m["text"] for m in page["messages"]] == [f"note {i}" for i in range(7, 12)]
    assert page["messages"][0]["chat"] == "telegram:-100"
    seen = [m["text"] for m in page["messages"]]
    while page["next_before"]:
        page = (await d.http.get("/api/messages", params={"chat": "telegram:-100", "limit": 5,
                                                          "before": page["next_before"]})).json()
        seen = [m["text"] for m in page["messages"]] + seen
    assert seen == [f"note {i}" for i in range(12)]
    for params in ({}, {"chat": "telegram:-100", "limit": 0}, {"chat": "telegram:-100", "limit": 201},
                   {"chat": "telegram:-100", "before": "-3"}, {"chat": "telegram:-100", "limit": "x"}):
        assert (await d.http.get("/api/messages", params=params)).status_code == 400, params
    assert (await d.http.get("/api/messages", params={"chat": "telegram:nope"})).status_code == 404


async def test_search_with_paging_and_chat_filter(run_daemon) -> None:
    d = await run_daemon()
    await ingest(d, "local:a", [f"deploy friday number {i}" for i in range(7)] + ["lunch monday"])
    await ingest(d, "local:b", ["deploy on friday too", "nothing here"])
    r = (await d.http.get("/api/search", params={"q": "deploy friday", "limit": 3})).json()
    assert r["total"] == 8 and len(r["messages"]) == 3 and r["next_offset"] == 3
    assert r["messages"][0]["text"] == "deploy on friday too", "newest first"
    texts = [m["text"] for m in r["messages"]]
    while r["next_offset"] is not None:
        r = (await d.http.get("/api/search", params={"q": "deploy friday", "limit": 3, "offset": r["next_offset"]})).json()
        texts += [m["text"] for m in r["messages"]]
    assert len(texts) == 8 and len(set(texts)) == 8
    r = (await d.http.get("/api/search", params={"q": "deploy", "chat": "local:b"})).json()
    assert [m["chat"] for m in r["messages"]] == ["local:b"] and r["total"] == 1
    # FTS syntax in user text never errors
    for q in ['"', "AND OR NOT", "deploy*", "NEAR(a b)", "a:b", "(", "'; DROP TABLE messages; --"]:
        r = await d.http.get("/api/search", params={"q": q})
        assert r.status_code == 200, (q, r.text)
    assert (await d.http.get("/api/search")).status_code == 400
    assert (await d.http.get("/api/search", params={"q": "   "})).status_code == 400
    assert (await d.http.get("/api/search", params={"q": "\x00"})).status_code == 400  # was a 500 (fuzz)
    assert (await d.http.get("/api/search", params={"q": " \x00 "})).status_code == 400
    assert (await d.http.get("/api/search", params={"q": "x", "offset": "-1"})).status_code == 400


# -- tasks ------------------------------------------------------------------------------------
async def test_tasks_crud_pause_resume_runs(run_daemon) -> None:
    d = await run_daemon()
    changed: list[int] = []
    d.daemon.tools.ctx.on_tasks_changed = lambda: changed.append(1)
    r = await d.http.post("/api/tasks", json={"group": "main", "prompt": "daily summary",
                                              "schedule_kind": "cron", "schedule_value": "0 9 * * *",
                                              "timezone": "Europe/Berlin"})
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["status"] == "active" and task["chat"] == "local:main" and task["next_run"] and task["created_by"] == "api"
    tid = task["id"]
    assert changed
    listed = (await d.http.get("/api/tasks")).json()
    assert [t["id"] for t in listed["tasks"]] == [tid] and "next_due" in listed
    assert (await d.http.get("/api/tasks", params={"group": "other"})).json()["tasks"] == []
    r = await d.http.post(f"/api/tasks/{tid}/pause", json={})
    assert r.json()["status"] == "paused"
    assert (await d.daemon.store.task(tid)).status.value == "paused"
    assert (await d.http.get(f"/api/tasks/{tid}")).json()["status"] == "paused"
    r = await d.http.post(f"/api/tasks/{tid}/resume", json={})
    assert r.json()["status"] == "active"
    r = await d.http.patch(f"/api/tasks/{tid}", json={"prompt": "weekly summary", "schedule_kind": "interval", "schedule_value": "3600"})
    assert r.status_code == 200 and r.json()["prompt"] == "weekly summary" and r.json()["schedule_kind"] == "interval"
    assert (await d.http.get(f"/api/tasks/{tid}")).json()["schedule_value"] == "3600"
    for body in ({}, {"context_mode": "odd"}, {"schedule_value": "1"}, {"prompt": 5}):
        assert (await d.http.patch(f"/api/tasks/{tid}", json=body)).status_code == 400, body

    def add_runs(c):
        for i in range(7):
            c.execute(
                "INSERT INTO task_runs (task_id, started_at, ended_at, outcome, error) VALUES (?, ?, ?, ?, ?)",
                (tid, f"2026-01-0{i + 1}T09:00:00+00:00", f"2026-01-0{i + 1}T09:00:05+00:00",
                 "error" if i == 3 else "ok", "boom" if i == 3 else None),
            )

    await d.daemon.store.run(add_runs)
    runs = (await d.http.get(f"/api/tasks/{tid}/runs", params={"limit": 4})).json()["runs"]
    assert len(runs) == 4 and runs[0]["started_at"].startswith("2026-01-07"), "newest first"
    runs = (await d.http.get(f"/api/tasks/{tid}/runs")).json()["runs"]
    assert [r["outcome"] for r in runs].count("error") == 1 and any(r["error"] == "boom" for r in runs)
    assert (await d.http.get(f"/api/tasks/{tid}/runs", params={"limit": "x"})).status_code == 400
    r = await d.http.delete(f"/api/tasks/{tid}")
    assert r.json()["status"] == "cancelled"
    assert (await d.http.post(f"/api/tasks/{tid}/resume", json={})).status_code == 409
    assert (await d.http.get("/api/tasks/task-nope")).status_code == 404
    assert (await d.http.post("/api/tasks/task-nope/pause", json={})).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"group": "main", "prompt": "x", "schedule_kind": "weekly", "schedule_value": "1"}, 400, "cron, interval or once"),
        ({"group": "main", "prompt": "x", "schedule_kind": "cron", "schedule_value": "61 * * * *"}, 400, "cron"),
        ({"group": "main", "prompt": "x", "schedule_kind": "interval", "schedule_value": "5"}, 400, "at least"),
        ({"group": "main", "prompt": "x", "schedule_kind": "once", "schedule_value": "2001-01-01T00:00"}, 400, "past"),
        ({"group": "main", "prompt": "x", "schedule_kind": "cron", "schedule_value": "* * * * *", "timezone": "Mars/Olympus"}, 400, "time zone"),
        ({"group": "main", "prompt": "", "schedule_kind": "cron", "schedule_value": "* * * * *"}, 400, "prompt"),
        ({"group": "main", "prompt": "x", "schedule_kind": "cron", "schedule_value": "* * * * *", "context_mode": "odd"}, 400, "context_mode"),
        ({"group": "nope", "prompt": "x", "schedule_kind": "cron", "schedule_value": "* * * * *"}, 404, "nope"),
        ({"group": "main", "prompt": 3, "schedule_kind": "cron", "schedule_value": "* * * * *"}, 400, "$.prompt"),
    ],
)
async def test_tasks_bad_input(run_daemon, body: dict[str, Any], status: int, needle: str) -> None:
    d = await run_daemon()
    r = await d.http.post("/api/tasks", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    assert await d.daemon.store.tasks() == []


async def test_api_tasks_serves_every_task_route(run_daemon) -> None:
    """ngb/web/api_tasks.py on an app of its own: list with status filter and run counts, and the
    run log paged with next_before."""
    from quart_trio import QuartTrio

    from ngb.web import api_tasks
    from ngb.web.common import ApiError, error

    d = await run_daemon()
    app = QuartTrio(__name__)
    app.register_error_handler(ApiError, lambda exc: error(exc.status, exc.message))
    added = api_tasks.register(app, d.daemon)
    assert "GET /api/tasks" in added and "GET /api/tasks/<task_id>/runs" in added and len(added) == 9
    assert "POST /api/tasks/changed" in added
    client = app.test_client()
    r = await client.post("/api/tasks", json={"group": "main", "prompt": "p", "schedule_kind": "interval", "schedule_value": "600"})
    tid = (await r.get_json())["id"]
    await d.daemon.store.run(lambda c: c.executemany(
        "INSERT INTO task_runs (task_id, started_at, outcome) VALUES (?, '2026-01-01T00:00:00+00:00', ?)",
        [(tid, "ok" if i % 3 else "error") for i in range(7)]))
    await client.post(f"/api/tasks/{tid}/pause", json={})
    listed = await (await client.get("/api/tasks", query_string={"status": "paused"})).get_json()
    assert [t["id"] for t in listed["tasks"]] == [tid] and listed["tasks"][0]["runs"] == {"ok": 4, "error": 3}
    assert (await (await client.get("/api/tasks", query_string={"status": "active"})).get_json())["tasks"] == []
    assert (await client.get("/api/tasks", query_string={"status": "bogus"})).status_code == 400
    page = await (await client.get(f"/api/tasks/{tid}/runs", query_string={"limit": 5})).get_json()
    assert len(page["runs"]) == 5 and page["next_before"]
    rest = await (await client.get(f"/api/tasks/{tid}/runs", query_string={"limit": 5, "before": page["next_before"]})).get_json()
    assert len(rest["runs"]) == 2 and rest["next_before"] is None


async def test_resume_over_the_api_keeps_the_interval_grid(run_daemon) -> None:
    """A task paused through its due time and resumed over the API goes to its next slot on its
    own grid (previous slot + k intervals), as through the CLI and the agent's tool; not now + 1 interval."""
    from datetime import timedelta

    from ngb.records import utcnow

    d = await run_daemon()
    r = await d.http.post("/api/tasks", json={"group": "main", "prompt": "p", "schedule_kind": "interval", "schedule_value": "600"})
    tid = r.json()["id"]
    assert (await d.http.post(f"/api/tasks/{tid}/pause", json={})).status_code == 200
    paused = await d.daemon.store.patch_task(tid, {"next_run": utcnow() - timedelta(seconds=1000.123)})
    slot = paused.next_run  # missed while paused
    r = await d.http.post(f"/api/tasks/{tid}/resume", json={})
    assert r.status_code == 200 and r.json()["status"] == "active"
    next_run = (await d.daemon.store.task(tid)).next_run
    assert next_run > utcnow() - timedelta(seconds=1)
    assert (next_run - slot) == timedelta(seconds=1200), "two intervals after the missed slot"
