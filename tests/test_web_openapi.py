"""docs/openapi.json against the live app: every route is documented, every documented operation
answers (no routing 404/405), and the JSON the GET operations return validates against the
documented schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from ngb.records import InboundMessage
from ngb.web.app import create_app

DOC = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
METHODS = {"get", "post", "put", "patch", "delete"}


def app_routes(daemon: Any) -> set[tuple[str, str]]:
    app = create_app(daemon)
    out = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method.lower() in METHODS:
                out.add((path, method.lower()))
    return out


def documented() -> set[tuple[str, str]]:
    return {(path, m) for path, ops in DOC["paths"].items() for m in ops if m in METHODS}


def fill(path: str, op: dict[str, Any], missing: bool) -> tuple[str, dict[str, str]]:
    params = {}
    for p in op.get("parameters", []):
        value = "zz-missing" if missing and p["in"] == "path" else str(p.get("example", ""))
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", value)
        elif p.get("required"):
            params[p["name"]] = value
    return path, params


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": DOC["components"]})


async def test_every_route_is_documented_and_every_documented_route_exists(run_daemon) -> None:
    d = await run_daemon()
    routes, docs = app_routes(d.daemon), documented()
    assert routes - docs == set(), "routes missing from docs/openapi.json"
    assert docs - routes == set(), "documented operations the app does not serve"
    Draft202012Validator.check_schema({"$defs": DOC["components"]["schemas"]})


async def test_documented_operations_answer_and_match_their_schemas(run_daemon) -> None:
    d = await run_daemon()
    await d.post("main", "hello schema")
    await d.wait_bot_replies("main", 1)
    await d.daemon.router.handle(InboundMessage(chat="local:main", sender="x", text="more", platform_id="oa-1"))
    r = await d.http.post("/api/tasks", json={"group": "main", "prompt": "p", "schedule_kind": "interval", "schedule_value": "3600"})
    task_id = r.json()["id"]
    await d.daemon.store.run(lambda c: c.execute(
        "INSERT INTO task_runs (task_id, started_at, outcome) VALUES (?, '2026-01-01T00:00:00+00:00', 'ok')", (task_id,)))
    checked = 0
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            if method not in METHODS or path.endswith("/events"):
                continue
            safe = method == "get"
            url, params = fill(path, op, missing=not safe)
            url = url.replace("task-00000000", task_id)
            if safe:
                r = await d.http.get(url, params=params)
            else:
                r = await d.http.request(method.upper(), url, params=params, json={})
            assert r.status_code != 405, (method, path)
            if r.status_code == 404:
                assert r.json()["error"] != "not found", f"{method} {path}: no such route"
            assert str(r.status_code) in op["responses"], (method, path, r.status_code, r.text)
            content = op["responses"][str(r.status_code)]
            if "$ref" in content:
                content = DOC["components"]["responses"][content["$ref"].rsplit("/", 1)[1]]
            schema = content.get("content", {}).get("application/json", {}).get("schema")
            if schema is not None:
                errors = sorted(validator(schema).iter_errors(r.json()), key=str)
                assert not errors, (method, path, [e.message for e in errors[:3]])
                checked += 1
    assert checked >= 25
    # the SSE route answers with an event stream
    async with d.http.stream("GET", "/api/chats/main/events", params={"after": 1}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
