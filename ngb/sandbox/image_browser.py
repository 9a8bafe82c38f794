"""Headless Chromium in the agent image, added without network inside any container.

Step 1b of the agent image build (ngb/sandbox/image.py): the base image chosen in step 1 gets
Debian's ``chromium`` package and exactly the packages it lacks for it, as one committed layer
``nanogridbot-browser:<chromium version>-<base id>``, which the Dockerfile then builds FROM.

1. the base's ``/var/lib/dpkg/status`` is read (a throwaway container, no network);
2. the host's own apt (its sources, its lists) resolves ``chromium`` against that status
   (``apt-get -s``: what the base lacks, Recommends left out) and downloads those .debs into a
   cache (``.cache/debs/<arch>``), reused by later builds;
3. a container of the base with the .debs bind-mounted read-only and ``--network none`` installs
   them (``apt-get install /debs/*.deb``), and is committed as the browser base. The .debs never
   reach a layer.

When it cannot be done (the host has no apt, or no Debian mirror answers, the base is not a
Debian bookworm, another architecture) the build goes on without the browser and says why; the
agent's browser tools then answer that this image has no browser.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .image_docker import inspect_image
from .image_progress import ImageBuildError, Ticker, fmt_secs, megabytes

BROWSER_PACKAGE = "chromium"
BROWSER_REPO = "nanogridbot-browser"
BROWSER_LABEL = "ngb.browser"  # "chromium <version>" on the browser base and the agent image made FROM it
BROWSER_FROM_LABEL = "ngb.browser.from"  # the base the browser was added to
_DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[(\S+)\]\)")
# Files a headless browser never reads, left out as dpkg unpacks (the layer never holds them):
# documentation (each package's copyright notice stays), manuals, other programs' translations,
# and Mesa's GL drivers with the LLVM they pull in (~140 MB): headless Chromium draws in software
# (its own SwiftShader), never through the system's GL.
PATH_EXCLUDES = (
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/usr/share/lintian/*", "/usr/lib/*/dri/*", "/usr/lib/*/libLLVM*", "/usr/lib/*/libz3.so*",
)  # fmt: skip
PATH_INCLUDES = ("/usr/share/doc/*/copyright",)
_DPKG_OPTS = " ".join(
    [f"-o DPkg::Options::=--path-exclude={p}" for p in PATH_EXCLUDES]
    + [f"-o DPkg::Options::=--path-include={p}" for p in PATH_INCLUDES]
)
_INSTALL_SCRIPT = (
    "set -eu; export DEBIAN_FRONTEND=noninteractive; "
    "mkdir -p /var/lib/apt/lists/partial /var/cache/apt/archives/partial; "
    f"apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 {_DPKG_OPTS} /debs/*.deb; "
    "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/log/apt "
    "/var/log/dpkg.log /var/cache/debconf/*-old /var/lib/dpkg/*-old; "
    "test -x /usr/bin/chromium"
)


class _NoBrowser(Exception):
    """Why the browser is not added (a one-line reason; the build goes on without it)."""


def _apt(args: list[str], status: Path, archives: Path | None = None) -> subprocess.CompletedProcess[str]:
    apt_get = shutil.which("apt-get")
    if not apt_get:
        raise _NoBrowser("the host has no apt-get (the browser's packages come from the host's Debian apt)")
    opts = ["-o", f"Dir::State::status={status}", "-o", "Debug::NoLocking=1", "-q"]
    if archives is not None:
        opts += ["-o", f"Dir::Cache::archives={archives}"]
    return subprocess.run(
        [apt_get, *opts, *args], capture_output=True, text=True, errors="replace", timeout=900
    )


def plan_install(status: Path) -> list[tuple[str, str, str]]:
    """(package, version, arch) that a system with this dpkg ``status`` lacks for ``chromium``."""
    res = _apt(["-s", "install", "--no-install-recommends", BROWSER_PACKAGE], status)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["apt-get failed"])[-1]
        raise _NoBrowser(f"the host's apt cannot resolve {BROWSER_PACKAGE} for this base: {last[:200]}")
    plan = [m.groups() for line in res.stdout.splitlines() if (m := _INST.match(line))]
    return [(str(a), str(b), str(c)) for a, b, c in plan]


def deb_filename(name: str, version: str, arch: str) -> str:
    """The file name apt gives a downloaded package (an epoch's ``:`` becomes ``%3a``)."""
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def _tag_for(version: str, base_id: str) -> str:
    """Chromium's version, the base's id and the install script's hash (a changed script makes a new one)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", version)
    made_by = f"{_INSTALL_SCRIPT}\n{BROWSER_LABEL} {BROWSER_FROM_LABEL}"
    script = hashlib.sha256(made_by.encode()).hexdigest()[:8]
    return f"{clean}-{base_id.split(':')[-1][:12]}-{script}"


def host_archives() -> Path | None:
    """The host's own apt cache of downloaded packages (``/var/cache/apt/archives``), if any."""
    apt_config = shutil.which("apt-config")
    if not apt_config:
        return None
    try:
        out = subprocess.run([apt_config, "shell", "A", "Dir::Cache::archives/d"], capture_output=True,
                             text=True, timeout=30).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        return None
    m = re.match(r"A='(.*)'", out.strip())
    return Path(m.group(1)) if m and Path(m.group(1)).is_dir() else None


def _seed_from(source: Path | None, files: list[Path]) -> int:
    """Link (or copy) into the cache the packages the host's apt already holds; how many."""
    if source is None:
        return 0
    n = 0
    for f in files:
        src = source / f.name
        if f.is_file() or not src.is_file():
            continue
        try:
            f.hardlink_to(src)
        except OSError:
            try:
                shutil.copy2(src, f)
            except OSError:
                continue
        n += 1
    return n


def _fetch_debs(status: Path, plan: list[tuple[str, str, str]], cache: Path,
                progress: Callable[[str], None]) -> list[Path]:  # fmt: skip
    # Absolute: apt reads a relative Dir::Cache::archives under Dir::Cache (/var/cache/apt).
    cache = cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "partial").mkdir(exist_ok=True)
    files = [cache / deb_filename(*p) for p in plan]
    seeded = _seed_from(host_archives(), files)
    if seeded:
        progress(f"      browser: {seeded} of {len(plan)} packages taken from the host's apt cache")
    missing = [p for p, f in zip(plan, files, strict=True) if not f.is_file()]
    if missing:
        progress(f"      browser: downloading {len(missing)} of {len(plan)} packages with the host's apt")
        res = _apt(["-d", "-y", "install", "--no-install-recommends", BROWSER_PACKAGE], status, cache)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["apt-get failed"])[-1]
            raise _NoBrowser(f"downloading {BROWSER_PACKAGE}'s packages failed: {last[:200]}")
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise _NoBrowser(f"apt did not leave {absent[0]} in {cache}")
    size = sum(f.stat().st_size for f in files)
    progress(f"      browser: {len(files)} packages ready in {cache} ({megabytes(size)})")
    return files


def _base_status(client: Any, base: str) -> bytes:
    try:
        out = client.containers.run(
            base, ["cat", "/var/lib/dpkg/status"], entrypoint=[], network_mode="none", user="0",
            remove=True, stdout=True, stderr=False,
        )  # fmt: skip
    except Exception as exc:
        raise _NoBrowser(
            f"cannot read the base's package list ({type(exc).__name__}: {str(exc)[:160]})"
        ) from exc
    if b"Package: dpkg\n" not in out:
        raise _NoBrowser("the base has no dpkg (not a Debian base)")
    return bytes(out)


def _install(client: Any, base: str, debs: list[Path], repo_tag: tuple[str, str], label: str,
             progress: Callable[[str], None]) -> None:  # fmt: skip
    """Install ``debs`` into a --network none container of ``base``; commit it as ``repo_tag``."""
    tick = Ticker(progress, interval=5.0)
    tail: collections.deque[str] = collections.deque(maxlen=20)
    with tempfile.TemporaryDirectory(prefix="ngb-browser-debs-") as tmp:
        for deb in debs:
            try:
                (Path(tmp) / deb.name).hardlink_to(deb)
            except OSError:
                shutil.copy2(deb, Path(tmp) / deb.name)
        Path(tmp).chmod(0o755)
        container = client.containers.create(
            base, ["sh", "-c", _INSTALL_SCRIPT], entrypoint=[], network_mode="none", user="0",
            volumes={tmp: {"bind": "/debs", "mode": "ro"}}, working_dir="/",
        )  # fmt: skip
        try:
            container.start()
            unpacked = configured = 0
            buf = b""
            for chunk in container.logs(stream=True, follow=True):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").rstrip()
                    tail.append(line)
                    if line.startswith("Unpacking "):
                        unpacked += 1
                        tick(f"browser: unpacked {unpacked}/{len(debs)}")
                    elif line.startswith("Setting up "):
                        configured += 1
                        tick(f"browser: set up {configured}/{len(debs)}")
            rc = int(container.wait().get("StatusCode", 1))
            if rc != 0:
                for line in tail:
                    progress("      | " + line)
                raise _NoBrowser(f"installing the browser's packages in the base failed (exit {rc})")
            container.commit(
                repository=repo_tag[0], tag=repo_tag[1],
                changes=["ENTRYPOINT []", 'CMD ["/bin/sh"]', "WORKDIR /", f'LABEL {BROWSER_LABEL}="{label}" {BROWSER_FROM_LABEL}="{base}"'],
            )  # fmt: skip
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)


def add_browser(
    client: Any, base: str, arch: str, cache_root: Path, progress: Callable[[str], None]
) -> str | None:
    """The name of ``base`` with headless Chromium added (made once per base and Chromium version),
    or None when it cannot be added (a progress line says why; the image is built without it)."""
    started = time.monotonic()
    try:
        deb_arch = _DEB_ARCH.get(arch)
        host_arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip() \
            if shutil.which("dpkg") else ""  # fmt: skip
        if not deb_arch or host_arch != deb_arch:
            raise _NoBrowser(f"the host's apt is for {host_arch or 'no Debian'}, the engine runs {arch}")
        info = inspect_image(client, base)
        if info is None:
            raise _NoBrowser(f"base {base} is not present")
        with tempfile.TemporaryDirectory(prefix="ngb-browser-status-") as tmp:
            status = Path(tmp) / "status"
            status.write_bytes(_base_status(client, base))
            plan = plan_install(status)
            if not plan:
                progress(f"      browser: {base} has {BROWSER_PACKAGE} already")
                return base
            version = next((v for n, v, _ in plan if n == BROWSER_PACKAGE), "")
            if not version:
                raise _NoBrowser(f"apt's plan for the base does not install {BROWSER_PACKAGE}")
            tag = _tag_for(version, str(info["Id"]))
            name = f"{BROWSER_REPO}:{tag}"
            if inspect_image(client, name) is not None:
                progress(f"      browser: {BROWSER_PACKAGE} {version}: reusing {name}")
                return name
            debs = _fetch_debs(status, plan, cache_root / "debs" / deb_arch, progress)
        progress(f"      browser: installing {BROWSER_PACKAGE} {version} into {base} (no network)")
        _install(client, base, debs, (BROWSER_REPO, tag), f"{BROWSER_PACKAGE} {version}", progress)
        made = inspect_image(client, name)
        if made is None:
            raise _NoBrowser(f"docker commit did not create {name}")
        grown = int(made.get("Size", 0)) - int(info.get("Size", 0))
        progress(
            f"      browser: {name} (+{megabytes(grown)}), made in {fmt_secs(time.monotonic() - started)}"
        )
        return name
    except (_NoBrowser, ImageBuildError, subprocess.SubprocessError, OSError) as exc:
        progress(f"      browser: not added ({exc}); the agent's browser tools will say so")
        return None


def remove_other_browser_bases(client: Any, keep: str) -> None:
    """Older browser bases, when nothing is built on them any more (errors ignored; called after
    the agent image that was built on the previous one is gone)."""
    with contextlib.suppress(Exception):
        for img in client.images.list(name=BROWSER_REPO):
            for tag in img.tags or []:
                if tag != keep:  # by name: an id with a child image (a build stage) would not go
                    with contextlib.suppress(Exception):
                        client.images.remove(tag, noprune=False)
