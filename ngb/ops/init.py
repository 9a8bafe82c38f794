"""`ngb init`: first-run set-up. Writes ngb.toml and, beside it, ngb.env (mode 600) for secrets.

Interactive by default (questions with defaults in brackets; secrets are read with getpass and
never echoed or printed back). ``--yes`` takes every answer from the flags and defaults, for
scripts: secrets then come from the environment (``ANTHROPIC_API_KEY``, ``NGB_TELEGRAM_TOKEN``...)
or from ``--*-file`` paths, never from the command line (it would land in the shell history and
in ``ps``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from ..config import CHANNEL_SECRET_ENV, ConfigError, load_config
from ..config.environment import environ
from .service import write_env_file

KNOWN_CHANNELS = ("local", "telegram", "slack", "discord")


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(answers: Mapping[str, object]) -> str:
    lines = [
        "# NanoGridBot configuration, written by `ngb init` (every key: docs/configuration.md).",
        "# Secrets are not here: they are in ngb.env beside this file (mode 600).",
        f"state_dir = {_toml_str(str(answers['state_dir']))}",
        f"trigger = {_toml_str(str(answers['trigger']))}",
        f"main_chat = {_toml_str(str(answers['main_chat']))}",
    ]
    if answers.get("model_upstream"):
        lines.append(f"model_upstream = {_toml_str(str(answers['model_upstream']))}")
    lines.append(f"web_port = {int(answers['web_port'])}")  # type: ignore[call-overload]
    for channel in answers["channels"]:  # type: ignore[attr-defined]
        lines += ["", f"[channels.{channel}]"]
    return "\n".join(lines) + "\n"


class Asker:
    """Questions on a terminal; in --yes mode every answer is the default."""

    def __init__(self, interactive: bool, ask: Callable[[str], str] = input, secret: Callable[[str], str] = getpass.getpass) -> None:
        self.interactive = interactive
        self._ask = ask
        self._secret = secret

    def text(self, question: str, default: str, check: Callable[[str], str | None] | None = None) -> str:
        if not self.interactive:
            return default
        while True:
            answer = self._ask(f"{question} [{default}]: ").strip() or default
            problem = check(answer) if check else None
            if problem is None:
                return answer
            print(f"  {problem}")

    def secret(self, question: str) -> str:
        if not self.interactive:
            return ""
        return self._secret(f"{question} (input hidden, Enter to skip): ").strip()


def _check_trigger(value: str) -> str | None:
    return None if re.fullmatch(r"@?\S{1,64}", value) else "one word, like @Andy"


def _check_chat(value: str) -> str | None:
    return None if re.fullmatch(r"[a-z][a-z0-9_-]*:\S+", value) else "<channel>:<chat id>, like local:main or telegram:-1001234"


def _check_url(value: str) -> str | None:
    return None if value.startswith(("https://", "http://127.", "http://localhost", "http://[::1]")) else "an https:// URL (http:// only for localhost)"


def _read_secret_file(path: str) -> str:
    text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{path} must hold the secret on one line")
    return text


def cmd_init(config: object, args: argparse.Namespace, env: Mapping[str, str] | None = None, asker: Asker | None = None) -> int:
    env = environ(env)
    interactive = not args.yes
    if interactive and not sys.stdin.isatty() and asker is None:
        print("ngb: init asks questions; with no terminal, pass --yes and flags (see ngb init --help)", file=sys.stderr)
        return 2
    asker = asker or Asker(interactive)
    path = Path(args.path).expanduser().absolute()
    env_path = path.parent / "ngb.env"
    if path.exists() and not args.force:
        print(f"ngb: {path} exists; --force overwrites it (the env file is merged, never truncated)", file=sys.stderr)
        return 2

    print(f"Setting up NanoGridBot: {path} (settings) and {env_path} (secrets, mode 600).")
    trigger = asker.text("Trigger word (the assistant's name)", args.trigger, _check_trigger)
    if not trigger.startswith("@"):
        trigger = "@" + trigger
    channels = list(dict.fromkeys(["local", *(args.channel or [])]))
    if interactive:
        extra = asker.text("Chat platforms besides the local chat (comma-separated: telegram, slack, discord; empty for none)", ",".join(c for c in channels if c != "local"))
        channels = list(dict.fromkeys(["local", *[c.strip().lower() for c in extra.split(",") if c.strip()]]))
    unknown = [c for c in channels if c not in KNOWN_CHANNELS]
    if unknown:
        print(f"ngb: unknown channel(s) {', '.join(unknown)}; known: {', '.join(KNOWN_CHANNELS)}", file=sys.stderr)
        return 2
    main_chat = asker.text("Main (administrator) chat", args.main_chat, _check_chat)
    upstream = asker.text("Model API (https://api.anthropic.com, or your gateway)", args.model_upstream, _check_url)
    state_dir = asker.text("State folder (database, group folders)", args.state_dir)
    web_port = asker.text("Web port (chat page and dashboard)", str(args.web_port), lambda v: None if v.isdigit() and 0 < int(v) < 65536 else "1-65535")

    secrets: dict[str, str] = {}
    try:
        key = _read_secret_file(args.anthropic_key_file) if args.anthropic_key_file else ""
    except (OSError, ValueError) as exc:
        print(f"ngb: --anthropic-key-file: {exc}", file=sys.stderr)
        return 2
    key = key or asker.secret("Anthropic API key") or env.get("ANTHROPIC_API_KEY", "").strip()
    if key:
        secrets["ANTHROPIC_API_KEY"] = key
    for channel in channels:
        for token_key, var in CHANNEL_SECRET_ENV.get(channel, {}).items():
            value = asker.secret(f"{channel} {token_key.replace('_', ' ')}") or env.get(var, "").strip()
            if value:
                secrets[var] = value
            else:
                print(f"  note: no {channel} {token_key}; set {var} in {env_path} before starting")

    answers = {
        "state_dir": state_dir,
        "trigger": trigger,
        "main_chat": main_chat,
        "model_upstream": upstream if upstream != "https://api.anthropic.com" else "",
        "web_port": web_port,
        "channels": channels,
    }
    text = render_toml(answers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    # Validate what we wrote with the real loader before putting it in place.
    try:
        load_config(tmp, env={k: v for k, v in secrets.items()} | {"NGB_CONFIG": str(tmp)})
    except ConfigError as exc:
        tmp.unlink()
        print(f"ngb: the answers do not make a valid config: {exc}", file=sys.stderr)
        return 2
    os.replace(tmp, path)
    created, notes = write_env_file(env_path, secrets)
    print(f"wrote {path}")
    print(f"{'created' if created else 'updated'} {env_path} (mode 600){': ' + ', '.join(sorted(secrets)) if secrets else ''}")
    for note in notes:
        print(note)
    if "ANTHROPIC_API_KEY" not in secrets and "anthropic.com" in upstream:
        print(f"  note: no model key yet: add ANTHROPIC_API_KEY=... to {env_path}")
    cfg = f"--config {path}"
    print("\nnext:")
    print(f"  check:            ngb {cfg} doctor")
    print(f"  run it now:       set -a; . {env_path}; set +a; ngb {cfg} run")
    print(f"  or as a service:  sudo ngb {cfg} service install --run-as $USER   (or: ngb {cfg} service install --user)")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", default="ngb.toml", help="the config file to write (default ./ngb.toml); ngb.env goes beside it")
    parser.add_argument("--yes", "-y", action="store_true", help="ask nothing: take flags, defaults and secrets from the environment")
    parser.add_argument("--force", action="store_true", help="overwrite an existing config file")
    parser.add_argument("--trigger", default="@Andy")
    parser.add_argument("--channel", action="append", choices=KNOWN_CHANNELS[1:], help="add a chat platform (repeat)")
    parser.add_argument("--main-chat", default="local:main")
    parser.add_argument("--model-upstream", default="https://api.anthropic.com")
    parser.add_argument("--state-dir", default="state", help="relative to the config file's folder")
    parser.add_argument("--web-port", type=int, default=8640)
    parser.add_argument("--anthropic-key-file", help="read the model key from this file (never pass a key on the command line)")
