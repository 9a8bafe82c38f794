"""Doctor's checks of what the agents get: the groups' sender allow-lists, the mount allowlist
(where it lives and what it allows), Docker reachable, and the agent image built and current (its
``ngb.agent.hash`` label against the agent's build context, ngb/paths.py)."""

import json
import shlex
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..config import Config
from ..config.environment import docker_host, editor
from ..paths import package_parent
from .check import Check
from .fix_lines import ngb_command, user_name


# -- mount allowlist ---------------------------------------------------------------------------------
def check_allow_lists(config: Config) -> Check:
    """Allow-list entries stored before names were refused (ngb/identity.py): each matches nobody."""
    from ..identity import invalid_sender_ids
    from ..records import Group

    db = config.db_path
    if not db.exists():
        return Check("allow-lists", "ok", "no groups yet")
    try:
        conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            groups = [
                Group(
                    chat=r["chat"],
                    folder=r["folder"],
                    allowed_senders=tuple(json.loads(r["allowed_senders"])),
                )
                for r in conn.execute("SELECT chat, folder, allowed_senders FROM groups")
            ]
        finally:
            conn.close()
    except (sqlite3.Error, ValueError, KeyError) as exc:
        return Check("allow-lists", "skip", f"cannot read the groups: {exc}")
    bad = [(g.chat, entry) for g in groups for entry, _ in invalid_sender_ids(g)]
    if bad:
        shown = ", ".join(f"{chat}: {entry!r}" for chat, entry in bad[:5]) + (
            f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        )
        chat = bad[0][0]
        return Check(
            "allow-lists",
            "warn",
            f"entries that are names, not the platform's user ids, match nobody: {shown}",
            f"ngb groups senders {shlex.quote(chat)}   (copy the id), then: ngb groups allow {shlex.quote(chat)} ID && "
            f"ngb groups disallow {shlex.quote(chat)} {shlex.quote(bad[0][1])}",
        )
    return Check(
        "allow-lists",
        "ok",
        f"{sum(len(g.allowed_senders) for g in groups)} allowed sender id(s) in {len(groups)} group(s)",
    )


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_allowlist(config: Config) -> Check:
    from ..sandbox.mounts import AllowlistError, load_allowlist

    path = Path(config.mount_allowlist).expanduser()
    q = shlex.quote(str(path))
    edit = editor()
    try:
        allowlist = load_allowlist(path)
    except AllowlistError as exc:
        fix = (
            f"chmod 644 {q}"
            if "writable by group or others" in exc.message
            else f"{edit} {q}   (format: docs/security.md#extra-mounts)"
        )
        return Check("mount allowlist", "fail", str(exc), fix)
    if not path.exists():
        return Check("mount allowlist", "ok", f"no file at {path}: no extra mounts (that is fine)")
    real = path.resolve()
    project = package_parent()
    good_home = Path("~/.config/nanogridbot").expanduser()
    move = f'install -d -m 700 {good_home} && mv {q} {good_home}/ && set mount_allowlist = "{good_home}/{path.name}"'
    for root, what in ((config.state_dir.resolve(), "the state folder"), (project, "the project folder")):
        if _inside(real, root):
            return Check("mount allowlist", "fail", f"{path} is inside {what}: an agent could edit it", move)
    problems: list[str] = []
    for i, entry in enumerate(allowlist.entries, start=1):
        target = entry.path.resolve()
        if not entry.path.exists():
            problems.append(f"entry {i} ({entry.path}) does not exist")
        elif _inside(real, target):
            return Check(
                "mount allowlist", "fail", f"entry {i} ({entry.path}) contains the allowlist itself", move
            )
        elif _inside(config.state_dir.resolve(), target) or _inside(target, config.state_dir.resolve()):
            problems.append(
                f"entry {i} ({entry.path}) overlaps the state folder: nothing there can be mounted"
            )
    folder_mode = stat.S_IMODE(real.parent.stat().st_mode)
    if folder_mode & 0o022:
        return Check(
            "mount allowlist",
            "warn",
            f"{real.parent} is writable by group or others (mode {folder_mode:04o}): someone could swap the file",
            f"chmod go-w {shlex.quote(str(real.parent))}",
        )
    if problems:
        return Check("mount allowlist", "warn", "; ".join(problems), f"{edit} {q}")
    return Check("mount allowlist", "ok", f"{path}: {len(allowlist.entries)} allowed folder(s)")


# -- Docker ------------------------------------------------------------------------------------------
def default_docker_factory() -> Any:
    import docker

    return docker.from_env(timeout=10)


def _docker_host() -> str:
    return docker_host() or "unix:///var/run/docker.sock"


def check_docker(factory: Callable[[], Any] = default_docker_factory) -> tuple[Check, Any]:
    host = _docker_host()
    try:
        client = factory()
        client.ping()
        version = client.version().get("Version", "?")
    except Exception as exc:  # noqa: BLE001 - the docker SDK raises many kinds
        text = f"{type(exc).__name__}: {exc}"
        low = text.lower()
        if "permission denied" in low:
            fix = f"sudo usermod -aG docker {user_name()}   (then log out and back in; or run the daemon as root)"
        elif "no such file" in low or "filenotfound" in low or "connection refused" in low:
            if shutil.which("dockerd") is None:
                fix = "sudo apt-get install docker.io && sudo systemctl enable --now docker"
            else:
                fix = "sudo systemctl enable --now docker   (without systemd: sudo dockerd &)"
        else:
            fix = "check DOCKER_HOST and that dockerd runs: docker info"
        return Check("docker", "fail", f"cannot reach the Docker engine at {host}: {text[:200]}", fix), None
    return Check("docker", "ok", f"Docker {version} at {host}"), client


def check_image(config: Config, client: Any, agent_dir: Path | None = None) -> Check:
    from ..sandbox import image as img

    build = f"{ngb_command(config)} image build"
    if client is None:
        return Check("agent image", "skip", "needs Docker (see above)")
    agent_dir = img.DEFAULT_AGENT_DIR if agent_dir is None else agent_dir
    try:
        info = img.inspect_image(client, config.image)
    except Exception as exc:  # noqa: BLE001
        return Check("agent image", "fail", f"cannot inspect {config.image}: {exc}", build)
    if info is None:
        return Check("agent image", "fail", f"{config.image} is not built", build)
    labels = img.image_labels(info)
    image_id = str(info.get("Id", ""))[7:19]
    if not (agent_dir / "Dockerfile").is_file():
        return Check(
            "agent image",
            "warn",
            f"{config.image} ({image_id}) exists; no {agent_dir} here to tell if it is current",
        )
    want = img.agent_content_hash(agent_dir)
    have = labels.get(img.HASH_LABEL)
    if have != want:
        why = (
            "has no ngb.agent.hash label (not built by ngb)"
            if not have
            else f"was built from other agent/ files ({have[:12]}, now {want[:12]})"
        )
        return Check(
            "agent image",
            "fail",
            f"{config.image} ({image_id}) {why}",
            f"{build}   (then restart the daemon)",
        )
    from ..sandbox.image_browser import BROWSER_LABEL

    browser = labels.get(BROWSER_LABEL)
    has = f"; browser: {browser}" if browser else "; no browser (the agent's browser tools are off: docs/web-browser.md)"
    return Check("agent image", "ok", f"{config.image} ({image_id}) is current (agent/ {want[:12]}){has}")
