"""The Docker engine side of the agent image: the client, inspecting an image and its labels, one
build at a time on this machine (a file lock), the engine's architecture, and ``docker build`` of an
assembled context with no network inside the build and condensed progress."""

from __future__ import annotations

import collections
import contextlib
import platform
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .image_progress import ImageBuildError, Ticker, build_failed, fmt_secs


def engine_arch(client: Any) -> str:
    arch = ""
    with contextlib.suppress(Exception):
        arch = str(client.version().get("Arch", ""))
    arch = (arch or platform.machine()).lower()
    mapping = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}
    if arch not in mapping:
        raise ImageBuildError(
            f"unsupported architecture {arch!r}: the agent image supports x86_64 and aarch64"
        )
    return mapping[arch]


def docker_client(timeout: float | None = 60) -> Any:
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a dependency of the daemon
        raise ImageBuildError("the Python package 'docker' is missing: pip install 'docker>=7.1'") from exc
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise ImageBuildError(
            f"cannot reach the Docker engine ({type(exc).__name__}: {exc}); install and start dockerd "
            "and make sure this user may use its socket "
            "(DOCKER_HOST or /var/run/docker.sock)"
        ) from exc
    return client


def inspect_image(client: Any, image: str) -> dict[str, Any] | None:
    import docker.errors

    try:
        return client.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        if getattr(exc, "status_code", None) == 404:
            return None
        raise ImageBuildError(f"docker could not inspect {image}: {exc}") from exc


def image_labels(info: dict[str, Any] | None) -> dict[str, str]:
    if not info:
        return {}
    return (info.get("Config") or {}).get("Labels") or {}


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """One build at a time on this machine (several daemons or test runs may ask together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def docker_build(
    client: Any,
    ctx: Path,
    image: str,
    buildargs: dict[str, str],
    progress: Callable[[str], None],
    nocache: bool,
) -> str:
    import docker.errors

    tail: collections.deque[str] = collections.deque(maxlen=30)
    tick = Ticker(progress, interval=10.0, indent="        ")
    image_id = ""
    step_started = time.monotonic()
    step = ""
    try:
        stream = client.api.build(
            path=str(ctx),
            tag=image,
            buildargs=buildargs,
            rm=True,
            forcerm=True,
            pull=False,
            nocache=nocache,
            network_mode="none",
            decode=True,
            timeout=None,
        )
        for ev in stream:
            if "error" in ev:
                msg = str(ev.get("error", "")).strip().splitlines()
                raise build_failed(progress, tail, f"docker build failed: {msg[-1] if msg else 'unknown error'}")
            if "aux" in ev and isinstance(ev["aux"], dict) and ev["aux"].get("ID"):
                image_id = ev["aux"]["ID"]
            text = ev.get("stream")
            if not text:
                continue
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                tail.append(line)
                if m := re.match(r"Step (\d+/\d+) : (.*)", line):
                    if step and time.monotonic() - step_started >= 3:
                        tick(f"step {step} took {fmt_secs(time.monotonic() - step_started)}", force=True)
                    step, step_started = m.group(1), time.monotonic()
                    cmd = re.sub(r"\s+", " ", m.group(2))
                    progress(f"      step {step}: {cmd[:90]}{'…' if len(cmd) > 90 else ''}")
                elif not line.startswith(" --->") and not line.startswith("Removing intermediate"):
                    tick(line[:100])
    except docker.errors.APIError as exc:
        raise build_failed(progress, tail, f"docker build failed: {exc.explanation or exc}") from exc
    except ImageBuildError:
        raise
    except Exception as exc:
        raise ImageBuildError(f"docker build failed: {type(exc).__name__}: {exc}") from exc
    info = inspect_image(client, image)
    if info is None:
        raise ImageBuildError(f"docker build finished but {image} is missing")
    return info["Id"] or image_id
