"""The agent image's build context: the files of ``agent/`` (found through ngb/paths.py, so an
installed wheel has them too) and their content hash (the image label ``ngb.agent.hash``), the
pinned ``agent/requirements.txt`` downloaded on the host with pip (the host's own pip
configuration) for the image's platform into a cache reused on later builds, and the temp context
folder assembled from both."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..paths import cache_root, resource
from .image_progress import ImageBuildError, Ticker, build_failed, megabytes

PYTHON_VERSION = "3.11"
# glibc baseline of the wheels we fetch; both bases are Debian bookworm (glibc 2.36).
MANYLINUX = "manylinux_2_17"
DEFAULT_AGENT_DIR = resource("agent")
DEFAULT_CACHE_ROOT = cache_root()

# Names skipped by the content hash and by the build context.
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".git", "node_modules", "wheels"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", ".swo", "~")
_SKIP_FILES = {".DS_Store"}
REQUIRED_FILES = ("Dockerfile", "requirements.txt", "runner.py")


def agent_files(agent_dir: Path) -> list[Path]:
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
    for path in agent_files(agent_dir):
        rel = path.relative_to(agent_dir).as_posix()
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        executable = b"x" if os.access(path, os.X_OK) else b"-"
        total.update(rel.encode() + b"\0" + executable + b"\0" + digest.digest())
    return total.hexdigest()


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(req_file: Path) -> list[tuple[str, str]]:
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
        pins.append((normalize_name(m.group(1)), m.group(2)))
    if not pins:
        raise ImageBuildError(f"{req_file} lists no packages")
    return pins


def cached_wheels(cache_dir: Path) -> dict[tuple[str, str], Path]:
    found: dict[tuple[str, str], Path] = {}
    if cache_dir.is_dir():
        for p in cache_dir.glob("*.whl"):
            parts = p.name.split("-")
            if len(parts) >= 5:
                found[(normalize_name(parts[0]), parts[1])] = p
    return found


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
    pins = read_pins(requirements)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cached_wheels(cache_dir)
    missing = [p for p in pins if p not in cached]
    if missing:
        have = len(pins) - len(missing)
        progress(
            f"[2/4] wheels: downloading {len(missing)} of {len(pins)} for cp{PYTHON_VERSION.replace('.', '')} "
            f"{platform_tag} into {cache_dir}" + (f" ({have} cached)" if have else "")
        )
        pip_download(missing, cache_dir, platform_tag, progress, already=have, total=len(pins))
        cached = cached_wheels(cache_dir)
        still = [f"{n}=={v}" for n, v in pins if (n, v) not in cached]
        if still:
            raise ImageBuildError(
                f"pip did not fetch {', '.join(still)} for {platform_tag}; see the output above"
            )
    files = [cached[p] for p in pins]
    size = sum(f.stat().st_size for f in files)
    if not missing:
        progress(f"[2/4] wheels: all {len(files)} cached in {cache_dir} ({megabytes(size)})")
    return files


def pip_download(
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
    # pip runs with the daemon's environment (its proxy and index settings), plus two of our own.
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    tick = Ticker(progress, interval=5.0)
    tail: collections.deque[str] = collections.deque(maxlen=25)
    done, done_bytes = already, 0
    current, cur_now, cur_total = "", 0, 0
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1, env=env
    )
    assert proc.stdout is not None

    def status() -> str:
        text = f"downloaded {done}/{total} ({megabytes(done_bytes)})"
        if current and cur_total and cur_now < cur_total:
            text += f"; {current}: {megabytes(cur_now)} of {megabytes(cur_total)}"
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
        raise build_failed(
            progress,
            tail,
            f"pip could not download the agent's wheels (exit {rc}); see the output above. The host's pip "
            "configuration (index-url, cert, proxy) must reach a package index, or put the wheels in "
            f"{dest} by hand"
        )


def assemble_context(agent_dir: Path, wheels: list[Path], ctx: Path) -> int:
    size = 0
    for path in agent_files(agent_dir):
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


def default_cache_dir(platform_tag: str) -> Path:
    return DEFAULT_CACHE_ROOT / "wheels" / f"cp{PYTHON_VERSION.replace('.', '')}-{platform_tag}"
