"""The agent image: build it once, find it fast afterwards.

``ensure_image()`` returns the id of the agent image (``agent/Dockerfile``), building it when it is
missing or when the files under ``agent/`` changed (their sha256 is the image label
``ngb.agent.hash``). The build works on a machine with no container registry and no network inside
the build:

1. base image: ``NGB_BASE_IMAGE`` / an explicit base; else the public Python image when it is local or
   can be pulled; else a local Debian bookworm made once with debootstrap from the host's own Debian
   mirror (read from the host's apt sources) and imported as ``nanogridbot-base:bookworm``;
1b. browser: Debian's ``chromium`` added to that base without network inside any container
   (ngb/sandbox/image_browser.py; made once per base and Chromium version); when it cannot be
   added the build goes on without it and says why (docs/web-browser.md);
2. wheels: the pinned ``agent/requirements.txt`` is downloaded on the host with pip (the host's own
   pip configuration) for the image's platform into a cache, reused on later builds;
3. build context: a temp dir with the files of ``agent/`` and ``wheels/``;
4. docker build with ``network_mode=none``; the wheels are installed with ``--no-index``.

The pieces: ngb/sandbox/agent_context.py (the files of agent/ found through ngb/paths.py, their
hash, the wheels, the assembled context: what goes into the image), ngb/sandbox/image_base.py and
debian_mirror.py (step 1), ngb/sandbox/image_docker.py (the engine: inspect, labels, docker build),
ngb/sandbox/image_progress.py (`ImageBuildError`, condensed progress). This module decides when to
build and runs the steps in order.

Command line: ``python -m ngb.sandbox.image [--force] [--image NAME] [--base-image NAME]``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config.environment import base_image_override

# What goes into the image (the agent/ files, REQUIRED_FILES, extra files copied into the context)
# is decided in agent_context.py: agent_files, agent_content_hash, assemble_context.
from .agent_context import (
    DEFAULT_AGENT_DIR,
    DEFAULT_CACHE_ROOT,
    MANYLINUX,
    REQUIRED_FILES,
    agent_content_hash,
    assemble_context,
    default_cache_dir,
    download_wheels,
)
from .debian_mirror import (
    AptSource,
    find_debian_mirror,
    host_debian_mirror,
    parse_deb822_sources,
    parse_sources_list,
)
from .image_base import DEFAULT_BASE_IMAGE, LOCAL_BASE_IMAGE, pick_base
from .image_browser import BROWSER_FROM_LABEL, BROWSER_LABEL, add_browser, remove_other_browser_bases
from .image_docker import build_lock, docker_build, docker_client, engine_arch, image_labels, inspect_image
from .image_progress import ImageBuildError, fmt_secs, megabytes

DEFAULT_IMAGE = "nanogridbot-agent:latest"
HASH_LABEL = "ngb.agent.hash"
BASE_LABEL = "ngb.agent.base"

__all__ = [
    "BASE_LABEL",
    "DEFAULT_AGENT_DIR",
    "DEFAULT_BASE_IMAGE",
    "DEFAULT_CACHE_ROOT",
    "DEFAULT_IMAGE",
    "HASH_LABEL",
    "LOCAL_BASE_IMAGE",
    "AptSource",
    "ImageBuildError",
    "agent_content_hash",
    "default_cache_dir",
    "download_wheels",
    "ensure_image",
    "find_debian_mirror",
    "host_debian_mirror",
    "image_labels",
    "inspect_image",
    "main",
    "parse_deb822_sources",
    "parse_sources_list",
]


def ensure_image(
    image: str = DEFAULT_IMAGE,
    *,
    agent_dir: Path | None = None,
    base_image: str | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    browser: bool = True,
    progress: Callable[[str], None] = print,
) -> str:
    """Return the id of the agent image ``image``, building it first when needed.

    Fast (one Engine API call) when ``image`` exists with the current content hash of ``agent_dir``
    (and, when a base is given explicitly or by ``NGB_BASE_IMAGE``, that same base). Otherwise builds
    it, which takes minutes the first time. Raises ImageBuildError with what to do on failure.
    ``browser=False`` builds without headless Chromium (the browser tools then say so).
    """
    agent_dir = Path(agent_dir) if agent_dir is not None else DEFAULT_AGENT_DIR
    missing = [name for name in REQUIRED_FILES if not (agent_dir / name).is_file()]
    if missing:
        raise ImageBuildError(f"{agent_dir} lacks {', '.join(missing)}: the agent image cannot be built")
    content_hash = agent_content_hash(agent_dir)
    explicit_base = base_image or base_image_override()

    client = docker_client()

    def up_to_date() -> dict[str, Any] | None:
        info = inspect_image(client, image)
        labels = image_labels(info)
        if labels.get(HASH_LABEL) != content_hash:
            return None
        # With the browser the Dockerfile's base is the browser base, which names its own base.
        if explicit_base and explicit_base not in (labels.get(BASE_LABEL), labels.get(BROWSER_FROM_LABEL)):
            return None
        # Asked without the browser, an image with it is rebuilt (the other way round not: where
        # the browser cannot be added, every start would try again; `--force` does).
        if not browser and BROWSER_LABEL in labels:
            return None
        return info

    if not force and (info := up_to_date()) is not None:
        return info["Id"]

    lock = (cache_dir.parent if cache_dir is not None else DEFAULT_CACHE_ROOT) / "image-build.lock"
    with build_lock(lock):
        if not force and (info := up_to_date()) is not None:  # built meanwhile by someone else
            return info["Id"]
        started = time.monotonic()
        old = inspect_image(client, image)
        why = "forced rebuild" if force else ("agent/ changed" if old else "not built yet")
        progress(f"building agent image {image} ({why}; content {content_hash[:12]})")

        t = time.monotonic()
        base = pick_base(client, explicit_base, progress)
        t_base = time.monotonic() - t

        t = time.monotonic()
        arch = engine_arch(client)
        plain_base = base
        if browser:
            base = add_browser(client, base, arch, lock.parent, progress) or base
        else:
            progress("      browser: left out (asked); the agent's browser tools will say so")
        t_browser = time.monotonic() - t

        t = time.monotonic()
        platform_tag = f"{MANYLINUX}_{arch}"
        wheel_dir = cache_dir if cache_dir is not None else default_cache_dir(platform_tag)
        wheels = download_wheels(agent_dir / "requirements.txt", wheel_dir, platform_tag, progress)
        t_wheels = time.monotonic() - t

        t = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ngb-agent-ctx-") as tmp:
            ctx = Path(tmp)
            size = assemble_context(agent_dir, wheels, ctx)
            progress(f"[3/4] build context: {len(wheels)} wheels + agent/ ({megabytes(size)})")
            progress(f"[4/4] docker build {image} from {base} (no network inside the build)")
            image_id = docker_build(
                client,
                ctx,
                image,
                {"BASE_IMAGE": base, "AGENT_HASH": content_hash},
                progress,
                nocache=force,
            )
        t_build = time.monotonic() - t

        info = inspect_image(client, image) or {}
        if base != plain_base:
            sizes = [int((inspect_image(client, b) or {}).get("Size", 0)) for b in (base, plain_base)]
            progress(
                f"      browser: {megabytes(sizes[0] - sizes[1])} of the image's {megabytes(info.get('Size', 0))}"
            )
        if image_labels(info).get(HASH_LABEL) != content_hash:
            raise ImageBuildError(f"built {image} but its {HASH_LABEL} label is not {content_hash}")
        if old and old.get("Id") != image_id:
            previous = inspect_image(client, str(old["Id"])) or {}
            if not previous.get("RepoTags"):  # another name still points at it: keep it
                with contextlib.suppress(Exception):  # the previous build, if nothing uses it any more
                    client.api.remove_image(old["Id"], noprune=False)
        if base != plain_base:
            remove_other_browser_bases(client, base)
        progress(
            f"agent image {image} ready: {image_id[:19]}, {megabytes(info.get('Size', 0))}, "
            f"in {fmt_secs(time.monotonic() - started)} (base {fmt_secs(t_base)}, browser {fmt_secs(t_browser)}, wheels "
            f"{fmt_secs(t_wheels)}, build {fmt_secs(t_build)})"
        )
        return image_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ngb.sandbox.image",
        description="Build the NanoGridBot agent image if it is missing or stale.",
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"image tag (default {DEFAULT_IMAGE})")
    parser.add_argument(
        "--base-image", default=None, help="base image (default: NGB_BASE_IMAGE, else automatic)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the image is up to date")
    parser.add_argument("--no-browser", action="store_true", help="build without headless Chromium")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        image_id = ensure_image(
            args.image,
            base_image=args.base_image,
            force=args.force,
            browser=not args.no_browser,
            progress=say,
        )
    except ImageBuildError as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else 'image build failed'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    say(f"{args.image} {image_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
