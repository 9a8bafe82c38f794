"""The host's tools as the agent sees them: the in-process MCP server ``ngb`` whose every call is
one request over requests.sock (the host authorizes and validates it)."""

from __future__ import annotations

import json
import re
from typing import Any

from .host import HostRequests

_STR_OR_NULL = {"type": ["string", "null"]}
_SCHEDULE_FIELDS: dict[str, Any] = {
    "prompt": {"type": "string", "description": "What the agent should do when the task runs."},
    "schedule_type": {"type": "string", "enum": ["cron", "interval", "once"]},
    "schedule_value": {
        "type": "string",
        "description": "cron: a cron expression ('0 9 * * 1-5'); interval: a duration ('30m', '2h', '1d') "
        "or seconds ('1800'); once: a local ISO time ('2025-06-01T09:00:00').",
    },
    "timezone": {**_STR_OR_NULL, "description": "IANA zone for cron/once, e.g. 'Europe/Berlin'."},
    "context_mode": {
        "type": "string",
        "enum": ["group", "isolated"],
        "description": "group: run in this group's conversation; isolated: a fresh session.",
    },
    "chat": {**_STR_OR_NULL, "description": "Target chat (main group only); default this group's chat."},
    "pre_script": {
        **_STR_OR_NULL,
        "description": "Optional shell command run in your container before each run; it must print "
        'JSON {"wakeAgent": true|false, "data": ...}. false: the run is skipped without waking you (cheap '
        "checks such as 'tell me only if the build broke'); data is added to the prompt.",
    },
}
_TASK_ID = {"task_id": {"type": "string"}}
_PAIRING_CODE = {
    "code": {"type": "string", "description": "The code the chat was given, like ABCD-EFGH (case and dash do not matter)."},
}

TOOL_SPECS: list[tuple[str, str, dict[str, Any], dict[str, Any], bool]] = [
    # name, description, JSON schema, defaults, main-only
    (
        "send_message",
        "Send a message to the chat right away (progress notes, results of scheduled tasks). "
        "Your normal reply text is delivered anyway; use this for extra or early messages.",
        {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "chat": {
                    **_STR_OR_NULL,
                    "description": "Another chat (main group only); default this group.",
                },
            },
            "required": ["text"],
        },
        {"chat": None},
        False,
    ),
    (
        "send_file",
        "Send a file from your group folder to the chat: images (PNG, JPEG, GIF, WebP) arrive as photos, "
        "anything else as a document. Write the file first (e.g. /workspace/group/out/chart.png), then call "
        "this with its path. In your normal reply text, ![alt](path) of an image in your folder is sent as "
        "that image too.",
        {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "The file: relative to your group folder or under /workspace/group."},
                "caption": {**_STR_OR_NULL, "description": "A caption sent with the file."},
                "chat": {**_STR_OR_NULL, "description": "Another chat (main group only); default this group."},
            },
            "required": ["path"],
        },
        {"caption": None, "chat": None},
        False,
    ),
    (
        "schedule_task",
        "Schedule a task: a prompt the agent runs later, on a cron schedule, an interval, or once.",
        {
            "type": "object",
            "properties": _SCHEDULE_FIELDS,
            "required": ["prompt", "schedule_type", "schedule_value"],
        },
        {"timezone": None, "context_mode": "group", "chat": None},
        False,
    ),
    ("list_tasks", "List the scheduled tasks you may see.", {"type": "object", "properties": {}}, {}, False),
    (
        "pause_task",
        "Pause a scheduled task.",
        {"type": "object", "properties": _TASK_ID, "required": ["task_id"]},
        {},
        False,
    ),
    (
        "resume_task",
        "Resume a paused task.",
        {"type": "object", "properties": _TASK_ID, "required": ["task_id"]},
        {},
        False,
    ),
    (
        "cancel_task",
        "Cancel (delete) a scheduled task.",
        {"type": "object", "properties": _TASK_ID, "required": ["task_id"]},
        {},
        False,
    ),
    (
        "update_task",
        "Change fields of a scheduled task; give only the fields to change.",
        {"type": "object", "properties": {**_TASK_ID, **_SCHEDULE_FIELDS}, "required": ["task_id"]},
        {},
        False,
    ),
    (
        "react",
        "React with an emoji to the message you are answering (where the chat's platform has reactions), "
        "e.g. 👍 to acknowledge something that needs no reply.",
        {
            "type": "object",
            "properties": {"emoji": {"type": "string", "description": "One emoji, e.g. 👍"}},
            "required": ["emoji"],
        },
        {},
        False,
    ),
    (
        "register_group",
        "Register a chat as a group the assistant serves (main group only).",
        {
            "type": "object",
            "properties": {
                "chat": {"type": "string", "description": "The chat's id, as the host lists it."},
                "folder": {
                    "type": "string",
                    "description": "Folder name for the group's files (a-z, 0-9, -).",
                },
                "requires_trigger": {
                    "type": "boolean",
                    "description": "Answer only when triggered (default true).",
                },
            },
            "required": ["chat", "folder"],
        },
        {"requires_trigger": True},
        True,
    ),
    (
        "list_pairings",
        "List the pairing codes of strangers' direct messages waiting for approval (main group only): "
        "code (ABCD-EFGH), chat, sender name and id, created and expiry times (UTC).",
        {
            "type": "object",
            "properties": {
                "all": {"type": "boolean", "description": "Include approved and denied ones (default false)."},
            },
        },
        {"all": False},
        True,
    ),
    (
        "approve_pairing",
        "Approve a pairing code (main group only): the chat becomes its own group, is told it is "
        "connected, and its next message is answered. Approve only codes your user asked you to.",
        {"type": "object", "properties": _PAIRING_CODE, "required": ["code"]},
        {},
        True,
    ),
    (
        "deny_pairing",
        "Deny a pairing code (main group only): the chat hears nothing more.",
        {"type": "object", "properties": _PAIRING_CODE, "required": ["code"]},
        {},
        True,
    ),
]


def tool_result_text(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("ok"):
        result = answer.get("result")
        if result is None:
            text = "ok"
        elif isinstance(result, str):
            text = result
        else:
            text = json.dumps(result, ensure_ascii=False)
        return {"content": [{"type": "text", "text": text}]}
    return {
        "content": [{"type": "text", "text": f"error: {answer.get('error') or 'request failed'}"}],
        "is_error": True,
    }


MAX_EXTRA_TOOLS = 50
_EXTRA_TOOL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def extra_tool_problem(spec: Any) -> str | None:
    """Why a plugin tool spec from the start frame is unusable (None: it is fine)."""
    if not isinstance(spec, dict):
        return "a tool spec must be an object"
    name = spec.get("name")
    if not isinstance(name, str) or not _EXTRA_TOOL_NAME.fullmatch(name):
        return f"tool name {str(name)[:70]!r} must match [a-z][a-z0-9_]{{0,63}}"
    if any(name == builtin[0] for builtin in TOOL_SPECS):
        return f"tool {name}: a built-in tool has that name"
    if not isinstance(spec.get("description", ""), str):
        return f"tool {name}: description must be a string"
    schema = spec.get("input_schema", {"type": "object"})
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return f"tool {name}: input_schema must be a JSON schema of type object"
    return None


def build_mcp_server(requests: HostRequests, is_main: bool, extra: list[dict[str, Any]] | None = None) -> Any:
    """The ``ngb`` MCP server: the host's built-in tools, plus the plugins' tools the start frame
    named (``extra``; the host authorizes and validates every call of either kind)."""
    from claude_agent_sdk import create_sdk_mcp_server, tool

    tools = []
    for name, description, schema, defaults, main_only in TOOL_SPECS:
        if main_only and not is_main:
            continue

        def make(name: str = name, defaults: dict[str, Any] = defaults) -> Any:
            async def handler(args: dict[str, Any]) -> dict[str, Any]:
                full = {**defaults, **(args or {})}
                answer = await requests.call(name, full)
                return tool_result_text(answer)

            return handler

        tools.append(tool(name, description, schema)(make()))
    for spec in extra or []:
        if spec.get("main_only") and not is_main:
            continue

        def make_extra(name: str = spec["name"]) -> Any:
            async def handler(args: dict[str, Any]) -> dict[str, Any]:
                return tool_result_text(await requests.call(name, dict(args or {})))

            return handler

        schema = spec.get("input_schema") or {"type": "object", "properties": {}}
        tools.append(tool(spec["name"], str(spec.get("description") or spec["name"]), schema)(make_extra()))
    return create_sdk_mcp_server(name="ngb", version="1.0.0", tools=tools)
