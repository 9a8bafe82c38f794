"""The agent image's base: the one given (``NGB_BASE_IMAGE`` / ``--base-image``), else the public
Python image when it is local or can be pulled, else a local Debian bookworm made once with
debootstrap from the host's own Debian mirror (ngb/sandbox/debian_mirror.py) and imported as
``nanogridbot-base:bookworm``."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .debian_mirror import host_debian_mirror
from .image_docker import inspect_image
from .image_progress import ImageBuildError, Ticker, build_failed, fmt_secs, megabytes

DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
LOCAL_BASE_IMAGE = "nanogridbot-base:bookworm"
DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_INCLUDE = "python3,python3-venv,ca-certificates"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PULL_TIMEOUT = 20.0  # seconds without an answer from the daemon while pulling the default base


def pull_image(client: Any, name: str, progress: Callable[[str], None], timeout: float) -> bool:
    """Try to pull ``name``; False when the registry cannot be reached (no error raised)."""
    import docker

    tick = Ticker(progress, interval=5.0)
    try:
        api = docker.from_env(timeout=timeout).api
        layers: dict[str, str] = {}
        for ev in api.pull(name, stream=True, decode=True):
            if "error" in ev:
                progress(f"      pull failed (no registry?): {str(ev['error']).splitlines()[0][:160]}")
                return False
            if ev.get("id") and ev.get("status"):
                layers[ev["id"]] = ev["status"]
                done = sum(1 for s in layers.values() if s in ("Pull complete", "Already exists"))
                tick(f"pulling {name}: {done}/{len(layers)} layers")
        return inspect_image(client, name) is not None
    except Exception as exc:
        why = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
        progress(f"      pull failed (no registry?): {str(why).splitlines()[0][:160]}")
        return False


def pick_base(client: Any, explicit: str | None, progress: Callable[[str], None]) -> str:
    if explicit:
        if inspect_image(client, explicit) is not None:
            progress(f"[1/4] base image: {explicit} (given, present locally)")
            return explicit
        progress(f"[1/4] base image: {explicit} (given): pulling")
        if pull_image(client, explicit, progress, PULL_TIMEOUT):
            return explicit
        raise ImageBuildError(
            f"base image {explicit} is not present locally and could not be pulled; "
            "load it (docker load / docker import) or unset NGB_BASE_IMAGE"
        )
    if inspect_image(client, DEFAULT_BASE_IMAGE) is not None:
        progress(f"[1/4] base image: {DEFAULT_BASE_IMAGE} (present locally)")
        return DEFAULT_BASE_IMAGE
    progress(f"[1/4] base image: trying to pull {DEFAULT_BASE_IMAGE}")
    if pull_image(client, DEFAULT_BASE_IMAGE, progress, PULL_TIMEOUT):
        progress(f"      pulled {DEFAULT_BASE_IMAGE}")
        return DEFAULT_BASE_IMAGE
    if inspect_image(client, LOCAL_BASE_IMAGE) is not None:
        progress(f"      no registry: reusing the local base {LOCAL_BASE_IMAGE}")
        return LOCAL_BASE_IMAGE
    _debootstrap_base(client, progress)
    return LOCAL_BASE_IMAGE


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    mounts: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4:
                mp = fields[4].replace("\\040", " ")
                if mp.startswith(prefix):
                    mounts.append(mp)
    return mounts


def _remove_rootfs(workdir: Path) -> None:
    """Delete a debootstrap tree, never following a mount that debootstrap left behind."""
    for mp in sorted(_mounts_under(workdir), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)
    if _mounts_under(workdir):
        raise ImageBuildError(f"{workdir} still has mounts under it; unmount them, then delete it")
    shutil.rmtree(workdir, ignore_errors=True)


def _run_debootstrap(cmd: list[str], progress: Callable[[str], None]) -> None:
    tick = Ticker(progress, interval=5.0)
    tail: collections.deque[str] = collections.deque(maxlen=25)
    retrieved = unpacked = configured = 0
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        tail.append(line)
        m = re.match(r"I: (Retrieving|Unpacking|Configuring) (\S+)", line)
        if m:
            what, name = m.groups()
            if what == "Retrieving" and name not in ("InRelease", "Release", "Release.gpg", "Packages"):
                retrieved += 1
                tick(f"downloaded {retrieved} .debs")
            elif what == "Unpacking" and not name.endswith("packages..."):
                unpacked += 1
                tick(f"unpacked {min(unpacked, retrieved)}/{retrieved}")
            elif what == "Configuring" and not name.endswith("packages..."):
                configured += 1
                tick(f"configured {min(configured, retrieved)}/{retrieved}")
        elif line.startswith(("E: ", "W: ")):
            progress("      " + line)
    rc = proc.wait()
    if rc != 0:
        raise build_failed(
            progress,
            tail,
            f"debootstrap failed (exit {rc}); see its output above. Check that the host reaches its Debian "
            "mirror (set NGB_DEBIAN_MIRROR to another one) or set NGB_BASE_IMAGE to a local image with Python 3.11"
        )
    tick(f"installed {configured} packages", force=True)


def _debootstrap_base(client: Any, progress: Callable[[str], None]) -> None:
    mirror = host_debian_mirror()
    if not mirror:
        raise ImageBuildError(
            "no registry and no Debian mirror in the host's apt sources (/etc/apt/sources.list{,.d}); "
            "set NGB_DEBIAN_MIRROR=<Debian mirror URL> or NGB_BASE_IMAGE=<local image with Python 3.11>"
        )
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.access("/usr/sbin/debootstrap", os.X_OK) else None
    )
    if not debootstrap:
        raise ImageBuildError(
            "no registry reachable and debootstrap is not installed: apt-get install debootstrap "
            "(or set NGB_BASE_IMAGE to a local image with Python 3.11)"
        )
    if not os.path.isfile(DEBIAN_KEYRING) or not shutil.which("gpgv"):
        raise ImageBuildError(
            f"debootstrap needs the Debian archive keys ({DEBIAN_KEYRING}) and gpgv to check the mirror: "
            "apt-get install debian-archive-keyring gpgv"
        )
    if os.geteuid() != 0:
        raise ImageBuildError(
            "no registry reachable, and making the local base image with debootstrap needs root: run "
            "`sudo python -m ngb.sandbox.image` once (or set NGB_BASE_IMAGE to a local image with Python 3.11)"
        )
    started = time.monotonic()
    progress(f"[1/4] base image: debootstrap Debian {DEBIAN_SUITE} from {mirror} (first time only, ~1-3 min)")
    workdir = Path(tempfile.mkdtemp(prefix="ngb-debootstrap-"))
    rootfs = workdir / "rootfs"
    try:
        _run_debootstrap(
            [
                debootstrap,
                "--variant=minbase",
                f"--keyring={DEBIAN_KEYRING}",
                f"--include={DEBOOTSTRAP_INCLUDE}",
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ],
            progress,
        )
        # Lean: no package caches, indexes or manuals in the base (it never runs apt).
        for rel in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/man", "usr/share/info",
                    "usr/share/locale", "var/log"):  # fmt: skip
            target = rootfs / rel
            if target.is_dir() and not target.is_symlink():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    elif child.name != "lock":
                        child.unlink(missing_ok=True)
        if _mounts_under(rootfs):
            raise ImageBuildError(f"debootstrap left mounts under {rootfs}; unmount them and retry")
        _import_rootfs(client, rootfs, progress)
    finally:
        _remove_rootfs(workdir)
    info = inspect_image(client, LOCAL_BASE_IMAGE)
    if info is None:
        raise ImageBuildError(f"docker import did not create {LOCAL_BASE_IMAGE}")
    progress(
        f"      {LOCAL_BASE_IMAGE}: {megabytes(info.get('Size', 0))}, made in {fmt_secs(time.monotonic() - started)}"
    )


def _import_rootfs(client: Any, rootfs: Path, progress: Callable[[str], None]) -> None:
    """``tar -C ROOTFS -c . | docker import - nanogridbot-base:bookworm`` through the Engine API."""
    tick = Ticker(progress, interval=5.0)
    tar = shutil.which("tar") or "tar"
    proc = subprocess.Popen([tar, "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        stdout = proc.stdout
        assert stdout is not None
        for block in iter(lambda: stdout.read(1 << 20), b""):
            sent += len(block)
            tick(f"importing into docker: {megabytes(sent)}")
            yield block

    repo, tag = LOCAL_BASE_IMAGE.rsplit(":", 1)
    try:
        result = client.api.import_image_from_stream(
            chunks(),
            repository=repo,
            tag=tag,
            changes=[
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                'CMD ["/bin/bash"]',
                f'LABEL ngb.base="debootstrap {DEBIAN_SUITE} minbase + {DEBOOTSTRAP_INCLUDE}"',
            ],
        )
    except Exception as exc:
        proc.kill()
        raise ImageBuildError(f"docker import of the debootstrap tree failed: {exc}") from exc
    finally:
        proc.stdout.close()
    if proc.wait() != 0:
        raise ImageBuildError(f"tar of the debootstrap tree failed (exit {proc.returncode})")
    if '"error"' in str(result):
        raise ImageBuildError(f"docker import failed: {str(result).strip()[:300]}")
    tick(f"imported {megabytes(sent)}", force=True)
