"""The agent image: build it once, find it fast afterwards.

``ensure_image()`` returns the id of the agent image (``agent/Dockerfile``), building it when it is
missing or when the files under ``agent/`` changed (their sha256 is the image label
``ngb.agent.hash``). The build works on a machine with no container registry and no network inside
the build:

1. base image: ``NGB_BASE_IMAGE`` / an explicit base; else the public Python image when it is local or
   can be pulled; else a local Debian bookworm made once with debootstrap from the host's own Debian
   mirror (read from the host's apt sources) and imported as ``nanogridbot-base:bookworm``;
2. wheels: the pinned ``agent/requirements.txt`` is downloaded on the host with pip (the host's own
   pip configuration) for the image's platform into a cache, reused on later builds;
3. build context: a temp dir with the files of ``agent/`` and ``wheels/``;
4. docker build with ``network_mode=none``; the wheels are installed with ``--no-index``.

Command line: ``python -m ngb.sandbox.image [--force] [--image NAME] [--base-image NAME]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_IMAGE = "nanogridbot-agent:latest"
DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
LOCAL_BASE_IMAGE = "nanogridbot-base:bookworm"
HASH_LABEL = "ngb.agent.hash"
BASE_LABEL = "ngb.agent.base"
PYTHON_VERSION = "3.11"
DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_INCLUDE = "python3,python3-venv,ca-certificates"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# glibc baseline of the wheels we fetch; both bases are Debian bookworm (glibc 2.36).
MANYLINUX = "manylinux_2_17"
PULL_TIMEOUT = 20.0  # seconds without an answer from the daemon while pulling the default base

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_AGENT_DIR = REPO_ROOT / "agent"
DEFAULT_CACHE_ROOT = REPO_ROOT / ".cache"

# Names skipped by the content hash and by the build context.
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".git", "node_modules", "wheels"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", ".swo", "~")
_SKIP_FILES = {".DS_Store"}
_REQUIRED_FILES = ("Dockerfile", "requirements.txt", "runner.py")

_DEBIAN_SUITES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}  # fmt: skip


class ImageBuildError(RuntimeError):
    """The agent image could not be found or built; the message (one line) says what to do."""


# --------------------------------------------------------------------------------------------------
# content hash


def _agent_files(agent_dir: Path) -> list[Path]:
    """The files of ``agent_dir`` that go into the image (and the hash), sorted, caches excluded."""
    out: list[Path] = []
    for root, dirs, files in os.walk(agent_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name in _SKIP_FILES or name.endswith(_SKIP_SUFFIXES):
                continue
            out.append(Path(root, name))
    return out


def agent_content_hash(agent_dir: Path) -> str:
    """sha256 over the files of ``agent_dir`` (Dockerfile, runner, requirements...), caches excluded.

    Covers each file's path relative to ``agent_dir``, its executable bit and its bytes.
    """
    agent_dir = Path(agent_dir)
    total = hashlib.sha256()
    total.update(b"ngb-agent-image-v1\0")
    for path in _agent_files(agent_dir):
        rel = path.relative_to(agent_dir).as_posix()
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        executable = b"x" if os.access(path, os.X_OK) else b"-"
        total.update(rel.encode() + b"\0" + executable + b"\0" + digest.digest())
    return total.hexdigest()


# --------------------------------------------------------------------------------------------------
# the host's Debian mirror (apt sources, one-line and deb822 formats)


@dataclass
class AptSource:
    types: list[str]
    uris: list[str]
    suites: list[str]
    components: list[str] = field(default_factory=list)
    enabled: bool = True


def parse_sources_list(text: str) -> list[AptSource]:
    """Parse the one-line format (``/etc/apt/sources.list``, ``*.list``)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options: [arch=amd64 signed-by=...]
        parts = line.split()
        if len(parts) < 3 or parts[0] not in ("deb", "deb-src"):
            continue
        out.append(AptSource(types=[parts[0]], uris=[parts[1]], suites=[parts[2]], components=parts[3:]))
    return out


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse the deb822 format (``*.sources``): stanzas separated by blank lines."""
    out: list[AptSource] = []
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
            continue
        if raw[0] in " \t":
            if key is not None:  # continuation line
                current[key] += " " + raw.strip()
            continue
        if ":" not in raw:
            continue
        name, value = raw.split(":", 1)
        key = name.strip().lower()
        current[key] = value.strip()
    if current:
        stanzas.append(current)
    for st in stanzas:
        enabled = st.get("enabled", "yes").strip().lower() not in ("no", "false", "0")
        out.append(
            AptSource(
                types=st.get("types", "").split(),
                uris=st.get("uris", "").split(),
                suites=st.get("suites", "").split(),
                components=st.get("components", "").split(),
                enabled=enabled,
            )
        )
    return out


def find_debian_mirror(sources: Iterable[AptSource]) -> str | None:
    """The first enabled ``deb`` source for a main Debian suite (not -security/-updates...)."""
    for src in sources:
        if not src.enabled or "deb" not in src.types:
            continue
        if not any(s.rstrip("/") in _DEBIAN_SUITES for s in src.suites):
            continue
        for uri in src.uris:
            if re.match(r"^(https?|ftp|file)://", uri):
                return uri.rstrip("/")
    return None


def host_debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str | None:
    """The Debian mirror the host's apt uses (``NGB_DEBIAN_MIRROR`` overrides), or None."""
    override = os.environ.get("NGB_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    sources: list[AptSource] = []
    candidates = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        candidates += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in candidates:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        sources += parse_deb822_sources(text) if path.suffix == ".sources" else parse_sources_list(text)
    return find_debian_mirror(sources)


# --------------------------------------------------------------------------------------------------
# small helpers


def _fmt_secs(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


class _Ticker:
    """Emits condensed progress: at most one line per ``interval`` seconds unless forced."""

    def __init__(self, progress: Callable[[str], None], interval: float = 5.0, indent: str = "      "):
        self.progress = progress
        self.interval = interval
        self.indent = indent
        self._last = 0.0
        self._last_text = ""

    def __call__(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if text == self._last_text:
            return
        if force or now - self._last >= self.interval:
            self._last, self._last_text = now, text
            self.progress(self.indent + text)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_pins(req_file: Path) -> list[tuple[str, str]]:
    pins: list[tuple[str, str]] = []
    for raw in req_file.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if not m:
            raise ImageBuildError(
                f"{req_file}: every requirement must be pinned as name==version, not {line!r}"
            )
        pins.append((_normalize(m.group(1)), m.group(2)))
    if not pins:
        raise ImageBuildError(f"{req_file} lists no packages")
    return pins


def _cached_wheels(cache_dir: Path) -> dict[tuple[str, str], Path]:
    found: dict[tuple[str, str], Path] = {}
    if cache_dir.is_dir():
        for p in cache_dir.glob("*.whl"):
            parts = p.name.split("-")
            if len(parts) >= 5:
                found[(_normalize(parts[0]), parts[1])] = p
    return found


def _engine_arch(client: Any) -> str:
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


def _docker_client(timeout: float | None = 60) -> Any:
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


def _inspect(client: Any, image: str) -> dict[str, Any] | None:
    import docker.errors

    try:
        return client.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        if getattr(exc, "status_code", None) == 404:
            return None
        raise ImageBuildError(f"docker could not inspect {image}: {exc}") from exc


def _labels(info: dict[str, Any] | None) -> dict[str, str]:
    if not info:
        return {}
    return (info.get("Config") or {}).get("Labels") or {}


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """One build at a time on this machine (several daemons or test runs may ask together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------
# [1/4] base image


def _pull(client: Any, name: str, progress: Callable[[str], None], timeout: float) -> bool:
    """Try to pull ``name``; False when the registry cannot be reached (no error raised)."""
    import docker

    tick = _Ticker(progress, interval=5.0)
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
        return _inspect(client, name) is not None
    except Exception as exc:
        why = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
        progress(f"      pull failed (no registry?): {str(why).splitlines()[0][:160]}")
        return False


def _pick_base(client: Any, explicit: str | None, progress: Callable[[str], None]) -> str:
    if explicit:
        if _inspect(client, explicit) is not None:
            progress(f"[1/4] base image: {explicit} (given, present locally)")
            return explicit
        progress(f"[1/4] base image: {explicit} (given): pulling")
        if _pull(client, explicit, progress, PULL_TIMEOUT):
            return explicit
        raise ImageBuildError(
            f"base image {explicit} is not present locally and could not be pulled; "
            "load it (docker load / docker import) or unset NGB_BASE_IMAGE"
        )
    if _inspect(client, DEFAULT_BASE_IMAGE) is not None:
        progress(f"[1/4] base image: {DEFAULT_BASE_IMAGE} (present locally)")
        return DEFAULT_BASE_IMAGE
    progress(f"[1/4] base image: trying to pull {DEFAULT_BASE_IMAGE}")
    if _pull(client, DEFAULT_BASE_IMAGE, progress, PULL_TIMEOUT):
        progress(f"      pulled {DEFAULT_BASE_IMAGE}")
        return DEFAULT_BASE_IMAGE
    if _inspect(client, LOCAL_BASE_IMAGE) is not None:
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
    tick = _Ticker(progress, interval=5.0)
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
        for line in tail:
            progress("      | " + line)
        raise ImageBuildError(
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
    info = _inspect(client, LOCAL_BASE_IMAGE)
    if info is None:
        raise ImageBuildError(f"docker import did not create {LOCAL_BASE_IMAGE}")
    progress(
        f"      {LOCAL_BASE_IMAGE}: {_mb(info.get('Size', 0))}, made in {_fmt_secs(time.monotonic() - started)}"
    )


def _import_rootfs(client: Any, rootfs: Path, progress: Callable[[str], None]) -> None:
    """``tar -C ROOTFS -c . | docker import - nanogridbot-base:bookworm`` through the Engine API."""
    tick = _Ticker(progress, interval=5.0)
    tar = shutil.which("tar") or "tar"
    proc = subprocess.Popen([tar, "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        assert proc.stdout is not None
        for block in iter(lambda: proc.stdout.read(1 << 20), b""):
            sent += len(block)
            tick(f"importing into docker: {_mb(sent)}")
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
    tick(f"imported {_mb(sent)}", force=True)


# --------------------------------------------------------------------------------------------------
# [2/4] wheels


def _pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise ImageBuildError("pip is needed on the host to fetch the agent's wheels: install python3-pip")


def _pip_supports_raw_progress(pip_cmd: list[str]) -> bool:
    version = ""
    if pip_cmd[:2] == [sys.executable, "-m"]:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            version = importlib.metadata.version("pip")
    else:
        with contextlib.suppress(Exception):
            out = subprocess.run(pip_cmd + ["--version"], capture_output=True, text=True, timeout=30).stdout
            version = out.split()[1]
    nums = [int(x) for x in re.findall(r"\d+", version)[:2]] or [0]
    return tuple(nums) >= (24, 1)


def download_wheels(
    requirements: Path, cache_dir: Path, platform_tag: str, progress: Callable[[str], None] = print
) -> list[Path]:
    """Download the pinned wheels for ``platform_tag`` into ``cache_dir`` (cached ones are reused).

    Returns the wheel files, one per pin. Uses the host's pip and its configuration.
    """
    pins = _read_pins(requirements)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = _cached_wheels(cache_dir)
    missing = [p for p in pins if p not in cached]
    if missing:
        have = len(pins) - len(missing)
        progress(
            f"[2/4] wheels: downloading {len(missing)} of {len(pins)} for cp{PYTHON_VERSION.replace('.', '')} "
            f"{platform_tag} into {cache_dir}" + (f" ({have} cached)" if have else "")
        )
        _pip_download(missing, cache_dir, platform_tag, progress, already=have, total=len(pins))
        cached = _cached_wheels(cache_dir)
        still = [f"{n}=={v}" for n, v in pins if (n, v) not in cached]
        if still:
            raise ImageBuildError(
                f"pip did not fetch {', '.join(still)} for {platform_tag}; see the output above"
            )
    files = [cached[p] for p in pins]
    size = sum(f.stat().st_size for f in files)
    if not missing:
        progress(f"[2/4] wheels: all {len(files)} cached in {cache_dir} ({_mb(size)})")
    return files


def _pip_download(
    pins: list[tuple[str, str]],
    dest: Path,
    platform_tag: str,
    progress: Callable[[str], None],
    *,
    already: int,
    total: int,
) -> None:
    pip = _pip_command()
    raw = _pip_supports_raw_progress(pip)
    cmd = pip + [
        "download", "--only-binary=:all:", "--no-deps", "--dest", str(dest),
        "--platform", platform_tag, "--python-version", PYTHON_VERSION,
        "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""),
        "--progress-bar", "raw" if raw else "off",
        *[f"{n}=={v}" for n, v in pins],
    ]  # fmt: skip
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    tick = _Ticker(progress, interval=5.0)
    tail: collections.deque[str] = collections.deque(maxlen=25)
    done, done_bytes = already, 0
    current, cur_now, cur_total = "", 0, 0
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1, env=env
    )
    assert proc.stdout is not None

    def status() -> str:
        text = f"downloaded {done}/{total} ({_mb(done_bytes)})"
        if current and cur_total and cur_now < cur_total:
            text += f"; {current}: {_mb(cur_now)} of {_mb(cur_total)}"
        return text

    for raw_line in proc.stdout:
        line = raw_line.strip()
        if "is ignored: it is neither a file nor a directory" in line:
            continue
        tail.append(line)
        if m := re.match(r"Progress (\d+) of (\d+)", line):
            cur_now, cur_total = int(m.group(1)), int(m.group(2))
            tick(status())
        elif m := re.match(r"Downloading (\S+)", line):
            current, cur_now, cur_total = m.group(1).split("-", 1)[0], 0, 0
        elif m := re.match(r"(?:Saved|File was already downloaded) (\S+)", line):
            done += 1
            with contextlib.suppress(OSError):
                done_bytes += Path(m.group(1)).stat().st_size
            current = ""
            tick(status(), force=done == total)
    rc = proc.wait()
    if rc != 0:
        for line in tail:
            progress("      | " + line)
        raise ImageBuildError(
            f"pip could not download the agent's wheels (exit {rc}); see the output above. The host's pip "
            "configuration (index-url, cert, proxy) must reach a package index, or put the wheels in "
            f"{dest} by hand"
        )


# --------------------------------------------------------------------------------------------------
# [3/4] build context, [4/4] docker build


def _assemble_context(agent_dir: Path, wheels: list[Path], ctx: Path) -> int:
    size = 0
    for path in _agent_files(agent_dir):
        target = ctx / path.relative_to(agent_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        size += target.stat().st_size
    wheel_dir = ctx / "wheels"
    wheel_dir.mkdir()
    for whl in wheels:
        target = wheel_dir / whl.name
        try:
            os.link(whl, target)
        except OSError:
            shutil.copy2(whl, target)
        size += target.stat().st_size
    return size


def _docker_build(
    client: Any,
    ctx: Path,
    image: str,
    buildargs: dict[str, str],
    progress: Callable[[str], None],
    nocache: bool,
) -> str:
    import docker.errors

    tail: collections.deque[str] = collections.deque(maxlen=30)
    tick = _Ticker(progress, interval=10.0, indent="        ")
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
                for line in tail:
                    progress("      | " + line)
                msg = str(ev.get("error", "")).strip().splitlines()
                raise ImageBuildError(f"docker build failed: {msg[-1] if msg else 'unknown error'}")
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
                        tick(f"step {step} took {_fmt_secs(time.monotonic() - step_started)}", force=True)
                    step, step_started = m.group(1), time.monotonic()
                    cmd = re.sub(r"\s+", " ", m.group(2))
                    progress(f"      step {step}: {cmd[:90]}{'…' if len(cmd) > 90 else ''}")
                elif not line.startswith(" --->") and not line.startswith("Removing intermediate"):
                    tick(line[:100])
    except docker.errors.APIError as exc:
        for line in tail:
            progress("      | " + line)
        raise ImageBuildError(f"docker build failed: {exc.explanation or exc}") from exc
    except ImageBuildError:
        raise
    except Exception as exc:
        raise ImageBuildError(f"docker build failed: {type(exc).__name__}: {exc}") from exc
    info = _inspect(client, image)
    if info is None:
        raise ImageBuildError(f"docker build finished but {image} is missing")
    return info["Id"] or image_id


# --------------------------------------------------------------------------------------------------
# the entry point


def default_cache_dir(platform_tag: str) -> Path:
    return DEFAULT_CACHE_ROOT / "wheels" / f"cp{PYTHON_VERSION.replace('.', '')}-{platform_tag}"


def ensure_image(
    image: str = DEFAULT_IMAGE,
    *,
    agent_dir: Path | None = None,
    base_image: str | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> str:
    """Return the id of the agent image ``image``, building it first when needed.

    Fast (one Engine API call) when ``image`` exists with the current content hash of ``agent_dir``
    (and, when a base is given explicitly or by ``NGB_BASE_IMAGE``, that same base). Otherwise builds
    it, which takes minutes the first time. Raises ImageBuildError with what to do on failure.
    """
    agent_dir = Path(agent_dir) if agent_dir is not None else DEFAULT_AGENT_DIR
    missing = [name for name in _REQUIRED_FILES if not (agent_dir / name).is_file()]
    if missing:
        raise ImageBuildError(f"{agent_dir} lacks {', '.join(missing)}: the agent image cannot be built")
    content_hash = agent_content_hash(agent_dir)
    explicit_base = base_image or os.environ.get("NGB_BASE_IMAGE") or None

    client = _docker_client()

    def up_to_date() -> dict[str, Any] | None:
        info = _inspect(client, image)
        labels = _labels(info)
        if labels.get(HASH_LABEL) != content_hash:
            return None
        if explicit_base and labels.get(BASE_LABEL) != explicit_base:
            return None
        return info

    if not force and (info := up_to_date()) is not None:
        return info["Id"]

    lock = (cache_dir.parent if cache_dir is not None else DEFAULT_CACHE_ROOT) / "image-build.lock"
    with _build_lock(lock):
        if not force and (info := up_to_date()) is not None:  # built meanwhile by someone else
            return info["Id"]
        started = time.monotonic()
        old = _inspect(client, image)
        why = "forced rebuild" if force else ("agent/ changed" if old else "not built yet")
        progress(f"building agent image {image} ({why}; content {content_hash[:12]})")

        t = time.monotonic()
        base = _pick_base(client, explicit_base, progress)
        t_base = time.monotonic() - t

        t = time.monotonic()
        arch = _engine_arch(client)
        platform_tag = f"{MANYLINUX}_{arch}"
        wheel_dir = cache_dir if cache_dir is not None else default_cache_dir(platform_tag)
        wheels = download_wheels(agent_dir / "requirements.txt", wheel_dir, platform_tag, progress)
        t_wheels = time.monotonic() - t

        t = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ngb-agent-ctx-") as tmp:
            ctx = Path(tmp)
            size = _assemble_context(agent_dir, wheels, ctx)
            progress(f"[3/4] build context: {len(wheels)} wheels + agent/ ({_mb(size)})")
            progress(f"[4/4] docker build {image} from {base} (no network inside the build)")
            image_id = _docker_build(
                client,
                ctx,
                image,
                {"BASE_IMAGE": base, "AGENT_HASH": content_hash},
                progress,
                nocache=force,
            )
        t_build = time.monotonic() - t

        info = _inspect(client, image) or {}
        if _labels(info).get(HASH_LABEL) != content_hash:
            raise ImageBuildError(f"built {image} but its {HASH_LABEL} label is not {content_hash}")
        if old and old.get("Id") != image_id:
            with contextlib.suppress(Exception):  # the previous build, if nothing uses it any more
                client.api.remove_image(old["Id"], noprune=False)
        progress(
            f"agent image {image} ready: {image_id[:19]}, {_mb(info.get('Size', 0))}, "
            f"in {_fmt_secs(time.monotonic() - started)} (base {_fmt_secs(t_base)}, wheels "
            f"{_fmt_secs(t_wheels)}, build {_fmt_secs(t_build)})"
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
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        image_id = ensure_image(args.image, base_image=args.base_image, force=args.force, progress=say)
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
