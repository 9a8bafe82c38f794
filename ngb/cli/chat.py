"""Terminal client for the daemon's local chat channel (``ngb chat [NAME]``), over its loopback
HTTP API (ngb/cli/chat_api.py).

Two modes:

- interactive (``run_chat``): prints the recent history, then posts every line read from
  stdin while printing new messages as they arrive (SSE, falling back to polling);
  Ctrl-D or Ctrl-C leaves with exit code 0.
- one-shot (``send_and_wait``, ``ngb chat --send TEXT [--wait S]``): posts one message and
  prints the bot's replies; exit code 0 if a reply came, 3 if none came in time.

Files: ``--file PATH`` (repeatable, with or without ``--send``) posts them with the message (one-shot);
``/file PATH [text]`` in the interactive client. Attachments print as ``[image: name (size) url]``
lines under their message (ngb/cli/chat_files.py).

Exit codes: 0 ok, 1 error (daemon unreachable, auth, unknown chat, ...), 3 no reply.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, TextIO

import trio

from ..config import load_config
from ..config.environment import api_token_override, chat_sender
from .chat_api import (
    DEFAULT_HISTORY,
    DEFAULT_SETTLE,
    DEFAULT_WAIT,
    EXIT_ERROR,
    EXIT_NO_REPLY,
    EXIT_OK,
    ChatApi,
    ChatError,
    Follower,
    Message,
    make_client,
)
from .chat_files import FileProblem, FileToSend, file_to_send, files_to_send, split_file_command
from .chat_print import format_message

__all__ = ["EXIT_ERROR", "EXIT_NO_REPLY", "EXIT_OK", "ChatError", "add_arguments", "base_url_for", "format_message",
           "main_from_args", "normalize_chat", "run_chat", "send_and_wait"]


def normalize_chat(name: str) -> str:
    """``local:main`` -> ``main``; other names are left as they are."""
    name = name.strip()
    if name.startswith("local:"):
        name = name[len("local:") :]
    return name


def _is_triggered(text: str, trigger: str) -> bool:
    return bool(trigger) and text.lstrip().lower().startswith(trigger.lower())


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return False


def _find_chat_error(exc: BaseException) -> ChatError | None:
    if isinstance(exc, ChatError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _find_chat_error(sub)
            if found is not None:
                return found
    return None


async def run_chat(
    base_url: str,
    chat: str,
    *,
    sender: str,
    token: str | None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    history: int = DEFAULT_HISTORY,
    token_hint: str | None = None,
) -> int:
    """Interactive chat: print recent history, then send stdin lines and print new messages.

    Returns 0 on end of input (Ctrl-D) or Ctrl-C, 1 on errors (one line on stderr).
    """
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    chat = normalize_chat(chat)
    base_url = base_url.rstrip("/")

    def out(line: str) -> None:
        print(line, file=stdout, flush=True)

    def notice(line: str) -> None:
        out(f"-- {line}")

    try:
        async with make_client(base_url, token) as client:
            api = ChatApi(client, base_url, chat, token, token_hint)
            info = await api.info()
            trigger = str(info.get("trigger") or "@Andy")
            assistant = str(info.get("assistant") or trigger.lstrip("@"))
            past = await api.messages(0)
            entry = await api.chat_entry()
            is_main = bool(entry.get("is_main")) if entry else chat == "main"

            for msg in past[-history:] if history > 0 else []:
                out(format_message(msg, base_url))
            last_id = max((m["id"] for m in past), default=0)

            if is_main:
                rule = f"{assistant} answers every message here"
            else:
                rule = f"{assistant} answers messages starting with {trigger}"
            notice(f"local:{chat} as {sender}. {rule}. /file PATH [text] sends a file. Ctrl-D to quit.")
            if entry is not None and not entry.get("registered", True):
                notice(f"local:{chat} is not registered, so {assistant} will not answer here")

            own_ids: set[int] = set()
            pending: list[str] = []  # texts posted whose id we don't know yet

            def on_message(msg: Message) -> None:
                if not msg.get("from_bot") and msg.get("sender") == sender:
                    if msg["id"] in own_ids:
                        return
                    text = msg.get("text")
                    if text in pending:
                        pending.remove(text)
                        own_ids.add(msg["id"])
                        return
                out(format_message(msg, base_url))

            follower = Follower(api, last_id, on_message, notice)
            hinted = False

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follower.run)
                while True:
                    line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
                    if line == "":
                        break  # EOF / Ctrl-D
                    text = line.rstrip("\r\n")
                    if not text.strip():
                        continue
                    files: tuple[FileToSend, ...] = ()
                    if text.startswith("/file ") or text.strip() == "/file":
                        try:
                            path, text = split_file_command(text[len("/file") :])
                            files = (file_to_send(path),)
                        except FileProblem as exc:
                            notice(str(exc))
                            continue
                    if not is_main and not hinted and not _is_triggered(text, trigger):
                        hinted = True
                        notice(f"hint: {assistant} only answers messages starting with {trigger} here")
                    pending.append(text)
                    try:
                        msg_id = await api.post(sender, text, files)
                    except ChatError as exc:
                        pending.remove(text)
                        if exc.kind in ("too_large", "file"):
                            notice(f"not sent: {exc}")  # the session goes on
                            continue
                        raise
                    if text in pending:
                        pending.remove(text)
                        own_ids.add(msg_id)
                nursery.cancel_scope.cancel()
    except KeyboardInterrupt:
        return EXIT_OK
    except ChatError as exc:
        print(f"ngb chat: {exc}", file=stderr, flush=True)
        return EXIT_ERROR
    except BaseExceptionGroup as group:
        if _only_interrupts(group):
            return EXIT_OK
        err = _find_chat_error(group)
        if err is None:
            raise
        print(f"ngb chat: {err}", file=stderr, flush=True)
        return EXIT_ERROR
    return EXIT_OK


async def send_and_wait(
    base_url: str,
    chat: str,
    text: str,
    *,
    sender: str,
    token: str | None,
    wait: float = DEFAULT_WAIT,
    settle: float = DEFAULT_SETTLE,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    token_hint: str | None = None,
    files: tuple[FileToSend, ...] = (),
) -> int:
    """Post one message (with ``files``, if any) and print the bot replies that follow it.

    Waits up to ``wait`` seconds for the first reply; after a reply, keeps printing further
    replies until ``settle`` seconds pass without one (or ``wait`` runs out).
    Returns 0 if a reply came, 3 if none did, 1 on errors.
    """
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    chat = normalize_chat(chat)
    base_url = base_url.rstrip("/")
    replies = 0

    try:
        async with make_client(base_url, token) as client:
            api = ChatApi(client, base_url, chat, token, token_hint)
            msg_id = await api.post(sender, text, files)
            if wait <= 0:
                return EXIT_NO_REPLY
            deadline = trio.current_time() + wait

            with trio.CancelScope(deadline=deadline) as scope:

                def on_message(msg: Message) -> None:
                    nonlocal replies
                    if not msg.get("from_bot"):
                        return
                    replies += 1
                    print(format_message(msg, base_url), file=stdout, flush=True)
                    scope.deadline = min(deadline, trio.current_time() + settle)

                follower = Follower(api, msg_id, on_message, lambda line: None)
                await follower.run()
    except KeyboardInterrupt:
        return EXIT_OK if replies else EXIT_NO_REPLY
    except ChatError as exc:
        print(f"ngb chat: {exc}", file=stderr, flush=True)
        return EXIT_ERROR
    except BaseExceptionGroup as group:
        if _only_interrupts(group):
            return EXIT_OK if replies else EXIT_NO_REPLY
        err = _find_chat_error(group)
        if err is None:
            raise
        print(f"ngb chat: {err}", file=stderr, flush=True)
        return EXIT_ERROR
    if not replies:
        print(f"ngb chat: no reply within {wait:g} s", file=stderr, flush=True)
        return EXIT_NO_REPLY
    return EXIT_OK


# --------------------------------------------------------------------------- CLI glue


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ngb chat``."""
    parser.add_argument("name", nargs="?", default="main", help="local chat name (default: main)")
    parser.add_argument(
        "--sender",
        default=None,
        help='name to send as (default: $NGB_CHAT_SENDER or "me")',
    )
    parser.add_argument(
        "--token",
        default=None,
        help="API token (default: $NGB_API_TOKEN, the configured one, or the one the daemon generated "
        "into its state dir)",
    )
    parser.add_argument("--url", default=None, help="daemon base URL (default: from the config)")
    parser.add_argument(
        "--send", metavar="TEXT", default=None, help="send one message, print the replies, exit"
    )
    parser.add_argument(
        "--file",
        metavar="PATH",
        action="append",
        default=[],
        help="send this file (repeatable), with the --send text if given; then print the replies and exit",
    )
    parser.add_argument(
        "--wait",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_WAIT,
        help=f"with --send: how long to wait for a reply (default {DEFAULT_WAIT:g}); exit 3 if none",
    )
    parser.add_argument(
        "--settle",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_SETTLE,
        help=f"with --send: stop this long after the last reply (default {DEFAULT_SETTLE:g})",
    )
    parser.add_argument(
        "--history",
        metavar="N",
        type=int,
        default=DEFAULT_HISTORY,
        help=f"how many past messages to show (default {DEFAULT_HISTORY})",
    )


def base_url_for(host: str | None, port: int | str) -> str:
    """Client URL for the daemon's bind address (wildcards become loopback)."""
    from ..api_token import client_url

    return client_url(host, port)


def main_from_args(args: argparse.Namespace, config_like: Any) -> int:
    """Run ``ngb chat`` from parsed arguments; config_like has web_host, web_port, api_token and
    (a Config) state_dir, where the daemon keeps the token it generated."""
    url = getattr(args, "url", None) or base_url_for(
        getattr(config_like, "web_host", None), getattr(config_like, "web_port", 8080)
    )
    token = (
        getattr(args, "token", None)
        or api_token_override()
        or getattr(config_like, "api_token", None)
        or None
    )
    token_hint = None
    if token is None and getattr(config_like, "state_dir", None) is not None:
        from ..api_token import TokenUnavailable, client_token

        try:
            token = client_token(config_like)
        except TokenUnavailable as exc:
            token_hint = str(exc)  # said only if the daemon asks for a token
    sender = getattr(args, "sender", None) or chat_sender() or "me"
    chat = normalize_chat(getattr(args, "name", None) or "main")
    if not chat:
        print("ngb chat: empty chat name", file=sys.stderr)
        return EXIT_ERROR
    send = getattr(args, "send", None)
    try:
        files = files_to_send(getattr(args, "file", None) or [])
    except FileProblem as exc:
        print(f"ngb chat: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if files and send is None:
        send = ""
    try:
        if send is not None:
            wait = getattr(args, "wait", DEFAULT_WAIT)
            settle = getattr(args, "settle", DEFAULT_SETTLE)
            if wait is None or not math.isfinite(wait):
                wait = DEFAULT_WAIT
            return trio.run(
                lambda: send_and_wait(
                    url, chat, send, sender=sender, token=token, wait=wait, settle=settle, token_hint=token_hint,
                    files=files,
                )
            )
        history = getattr(args, "history", DEFAULT_HISTORY)
        return trio.run(
            lambda: run_chat(url, chat, sender=sender, token=token, history=history, token_hint=token_hint)
        )
    except KeyboardInterrupt:
        return EXIT_OK if send is None else EXIT_NO_REPLY
    except BaseExceptionGroup as group:
        if _only_interrupts(group):
            return EXIT_OK if send is None else EXIT_NO_REPLY
        raise


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m ngb.cli.chat``), mainly for development."""
    parser = argparse.ArgumentParser(prog="ngb chat", description="Chat with the assistant in a local chat.")
    add_arguments(parser)
    args = parser.parse_args(argv)

    return main_from_args(args, load_config())


if __name__ == "__main__":
    sys.exit(main())
