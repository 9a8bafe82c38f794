"""The agent image: content hash, apt mirror discovery, wheel cache, and (with Docker) the image."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import pytest

from ngb.sandbox import agent_context
from ngb.sandbox import image as img
from ngb.sandbox.image import (
    ImageBuildError,
    agent_content_hash,
    ensure_image,
    find_debian_mirror,
    host_debian_mirror,
    parse_deb822_sources,
    parse_sources_list,
)

REPO = Path(__file__).resolve().parents[1]
AGENT_DIR = REPO / "agent"


# --------------------------------------------------------------------------------------------------
# content hash (no docker)


@pytest.fixture
def agent_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "agent"
    # Everything the Dockerfile copies (agent/ may hold more than these three files).
    shutil.copytree(AGENT_DIR, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("Dockerfile", "requirements.txt", "runner.py"):
        if not (dst / name).exists():  # agent/runner.py may not be written yet
            (dst / name).write_text(f"# {name}\n")
    return dst


def test_hash_changes_when_an_agent_file_changes(agent_copy: Path) -> None:
    before = agent_content_hash(agent_copy)
    assert before == agent_content_hash(agent_copy)
    assert len(before) == 64

    runner = agent_copy / "runner.py"
    original = runner.read_bytes()
    runner.write_bytes(original + b"\n# changed\n")
    changed = agent_content_hash(agent_copy)
    assert changed != before

    runner.write_bytes(original)
    assert agent_content_hash(agent_copy) == before

    (agent_copy / "requirements.txt").write_text("claude-agent-sdk==0.0.1\n")
    assert agent_content_hash(agent_copy) != before


def test_hash_covers_new_files_and_ignores_caches(agent_copy: Path) -> None:
    before = agent_content_hash(agent_copy)
    for junk in ("__pycache__/runner.cpython-311.pyc", ".pytest_cache/v/x", ".ruff_cache/a", "wheels/x.whl"):
        path = agent_copy / junk
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("junk")
    (agent_copy / "runner.pyc").write_text("junk")
    assert agent_content_hash(agent_copy) == before

    (agent_copy / "helper.py").write_text("X = 1\n")
    assert agent_content_hash(agent_copy) != before


def test_hash_depends_on_names_not_only_contents(agent_copy: Path) -> None:
    before = agent_content_hash(agent_copy)
    (agent_copy / "runner.py").rename(agent_copy / "runner2.py")
    assert agent_content_hash(agent_copy) != before


# --------------------------------------------------------------------------------------------------
# the host's Debian mirror (no docker)

DEB822 = """\
Types: deb
# http://snapshot.example.org/archive/debian/20250520T000000Z
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.org/debian-security
Suites: bookworm-security
Components: main
"""

DEB822_DISABLED_FIRST = """\
Types: deb-src
URIs: http://src.example.org/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: http://off.example.org/debian
Suites: bookworm
Components: main

Types: deb deb-src
URIs:
 https://on.example.org/debian/
 http://second.example.org/debian
Suites: trixie
Components: main contrib
"""

ONE_LINE = """\
# the main archive
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example.org/debian/ bookworm main contrib
deb http://mirror.example.org/debian-security bookworm-security main
deb-src http://mirror.example.org/debian bookworm main
"""


def test_parse_deb822_sources() -> None:
    sources = parse_deb822_sources(DEB822)
    assert len(sources) == 2
    first = sources[0]
    assert first.types == ["deb"]
    assert first.uris == ["http://mirror.example.org/debian"]
    assert first.suites == ["bookworm", "bookworm-updates"]
    assert first.components == ["main"]
    assert first.enabled
    assert find_debian_mirror(sources) == "http://mirror.example.org/debian"


def test_deb822_skips_disabled_and_source_only_stanzas() -> None:
    sources = parse_deb822_sources(DEB822_DISABLED_FIRST)
    assert [s.enabled for s in sources] == [True, False, True]
    assert sources[2].uris == ["https://on.example.org/debian/", "http://second.example.org/debian"]
    assert find_debian_mirror(sources) == "https://on.example.org/debian"


def test_parse_one_line_sources() -> None:
    sources = parse_sources_list(ONE_LINE)
    assert [s.types for s in sources] == [["deb"], ["deb"], ["deb-src"]]
    assert sources[0].uris == ["http://mirror.example.org/debian/"]
    assert sources[0].suites == ["bookworm"]
    assert sources[0].components == ["main", "contrib"]
    assert find_debian_mirror(sources) == "http://mirror.example.org/debian"


def test_security_or_foreign_archives_are_not_a_debian_mirror() -> None:
    only_security = "deb http://mirror.example.org/debian-security bookworm-security main\n"
    assert find_debian_mirror(parse_sources_list(only_security)) is None
    ubuntu = "deb http://archive.example.org/ubuntu jammy main universe\n"
    assert find_debian_mirror(parse_sources_list(ubuntu)) is None


def test_host_debian_mirror_reads_both_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NGB_DEBIAN_MIRROR", raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert host_debian_mirror(apt) is None

    (apt / "sources.list.d" / "debian.sources").write_text(DEB822)
    (apt / "sources.list.d" / "other.sources.disabled-by-someone").write_text(
        DEB822.replace("mirror.example.org", "ignored.example.org")
    )
    assert host_debian_mirror(apt) == "http://mirror.example.org/debian"

    (apt / "sources.list").write_text(ONE_LINE.replace("mirror.example.org", "first.example.org"))
    assert host_debian_mirror(apt) == "http://first.example.org/debian"

    monkeypatch.setenv("NGB_DEBIAN_MIRROR", "http://override.example.org/debian/")
    assert host_debian_mirror(apt) == "http://override.example.org/debian"


# --------------------------------------------------------------------------------------------------
# requirements and the wheel cache (no docker, no network)


def test_requirements_are_exactly_pinned() -> None:
    pins = dict(agent_context.read_pins(AGENT_DIR / "requirements.txt"))
    assert pins["claude-agent-sdk"] == "0.2.188"
    for needed in ("anyio", "mcp", "pydantic", "pydantic-core", "jsonschema"):
        assert needed in pins


def test_unpinned_requirement_is_an_error(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("claude-agent-sdk>=0.2\n")
    with pytest.raises(ImageBuildError, match="pinned"):
        agent_context.read_pins(req)


def test_cached_wheels_skip_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\nClaude_Agent.SDK==0.2.188\nanyio==4.16.0  # pinned\n")
    cache = tmp_path / "wheels"
    cache.mkdir()
    (cache / "claude_agent_sdk-0.2.188-py3-none-manylinux_2_17_x86_64.whl").write_bytes(b"x" * 10)
    (cache / "anyio-4.16.0-py3-none-any.whl").write_bytes(b"y")
    (cache / "anyio-4.15.0-py3-none-any.whl").write_bytes(b"old")

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when every wheel is cached")

    monkeypatch.setattr(agent_context, "pip_download", no_pip)
    lines: list[str] = []
    files = img.download_wheels(req, cache, "manylinux_2_17_x86_64", lines.append)
    assert [f.name for f in files] == [
        "claude_agent_sdk-0.2.188-py3-none-manylinux_2_17_x86_64.whl",
        "anyio-4.16.0-py3-none-any.whl",
    ]
    assert any("cached" in line for line in lines)


def test_missing_agent_files_raise(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="runner.py"):
        ensure_image(agent_dir=tmp_path, progress=lambda _: None)


def test_cli_prints_one_line_on_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(*args: object, **kwargs: object) -> str:
        raise ImageBuildError("debootstrap is not installed: apt-get install debootstrap")

    monkeypatch.setattr(img, "ensure_image", fail)
    assert img.main(["--image", "x:y"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: debootstrap is not installed: apt-get install debootstrap"]


# --------------------------------------------------------------------------------------------------
# the image itself (needs the Docker engine)

RESTRICTED = dict(
    network_mode="none",
    read_only=True,
    tmpfs={"/tmp": "", "/home/agent": ""},
    cap_drop=["ALL"],
    security_opt=["no-new-privileges"],
)


def _run(client, image_id: str, entrypoint: list[str], command: list[str] | None = None, **kw) -> str:
    out = client.containers.run(image_id, command=command, entrypoint=entrypoint, remove=True, **kw)
    return out.decode().strip()


@pytest.mark.docker
def test_image_is_built_and_labelled(docker_client, agent_image: str) -> None:
    info = docker_client.api.inspect_image(img.DEFAULT_IMAGE)
    assert info["Id"] == agent_image
    labels = info["Config"]["Labels"]
    assert labels[img.HASH_LABEL] == agent_content_hash(AGENT_DIR)
    assert info["Config"]["User"] == "1000"
    assert info["Config"]["WorkingDir"] == "/workspace/group"
    assert info["Config"]["Entrypoint"] == ["/opt/agent/bin/python", "/opt/agent/runner.py"]


@pytest.mark.docker
def test_second_call_is_fast_and_does_not_rebuild(agent_image: str) -> None:
    lines: list[str] = []
    started = time.perf_counter()
    again = ensure_image(progress=lines.append)
    elapsed = time.perf_counter() - started
    assert again == agent_image
    assert lines == []  # nothing built, nothing printed
    assert elapsed < 1.0, f"the up-to-date check took {elapsed:.2f}s"  # ~0.05 s here; budget 0.3 s


@pytest.mark.docker
def test_image_runs_as_uid_1000(docker_client, agent_image: str) -> None:
    assert _run(docker_client, agent_image, ["id"], ["-u"]) == "1000"
    assert _run(docker_client, agent_image, ["sh", "-c", "echo $HOME; pwd"]).split() == [
        "/home/agent",
        "/workspace/group",
    ]


@pytest.mark.docker
def test_sdk_imports_in_a_locked_down_container(docker_client, agent_image: str) -> None:
    out = _run(
        docker_client,
        agent_image,
        ["/opt/agent/bin/python"],
        ["-c", "import claude_agent_sdk, sys; print(claude_agent_sdk.__version__, sys.version_info[:2])"],
        **RESTRICTED,
    )
    assert out == "0.2.188 (3, 11)"


@pytest.mark.docker
def test_bundled_cli_runs_in_a_locked_down_container(docker_client, agent_image: str) -> None:
    out = _run(docker_client, agent_image, ["claude"], ["--version"], **RESTRICTED)
    assert "Claude Code" in out


@pytest.mark.docker
def test_locked_down_container_can_write_only_tmp_and_home(docker_client, agent_image: str) -> None:
    script = (
        "touch /tmp/t /home/agent/h && echo writable; "
        "touch /opt/agent/x 2>/dev/null || echo ro-opt; touch /etc/x 2>/dev/null || echo ro-etc"
    )
    out = _run(docker_client, agent_image, ["sh", "-c"], [script], **RESTRICTED)
    assert out.split() == ["writable", "ro-opt", "ro-etc"]


@pytest.mark.docker
@pytest.mark.slow
def test_changed_agent_dir_rebuilds_from_cache(docker_client, agent_image: str, agent_copy: Path) -> None:
    (agent_copy / "runner.py").write_bytes((AGENT_DIR / "runner.py").read_bytes() + b"\n# test change\n")
    tag = "nanogridbot-agent:test-rebuild"
    lines: list[str] = []
    try:
        image_id = ensure_image(tag, agent_dir=agent_copy, progress=lines.append)
        assert image_id != agent_image
        labels = docker_client.api.inspect_image(tag)["Config"]["Labels"]
        assert labels[img.HASH_LABEL] == agent_content_hash(agent_copy)
        assert not any("debootstrap" in line for line in lines)  # the base is reused
        assert ensure_image(tag, agent_dir=agent_copy, progress=lines.append) == image_id
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag)


@pytest.mark.docker
@pytest.mark.slow
def test_agent_browser_false_builds_without_chromium_and_drops_it_from_an_image_that_has_it(
        docker_client, agent_image: str) -> None:
    """agent_browser = false (ngb run / ngb image build pass it as browser=False): an image with
    the browser counts as stale and is rebuilt without it; asked for again, it is current."""
    tag = "nanogridbot-agent:test-nobrowser"
    lines: list[str] = []
    try:
        docker_client.api.tag(agent_image, "nanogridbot-agent", "test-nobrowser")  # the browser image
        assert "ngb.browser" in docker_client.api.inspect_image(tag)["Config"]["Labels"]
        assert ensure_image(tag, progress=lines.append) == agent_image  # with the browser asked: current
        image_id = ensure_image(tag, browser=False, progress=lines.append)
        assert image_id != agent_image
        assert any("browser: left out (asked)" in line for line in lines), lines
        assert "ngb.browser" not in docker_client.api.inspect_image(tag)["Config"]["Labels"]
        # the image it replaced under this name is still the shared agent image: kept, not removed
        assert docker_client.api.inspect_image(agent_image)["RepoTags"] == ["nanogridbot-agent:latest"]
        out = docker_client.containers.run(tag, ["sh", "-c", "test -e /usr/bin/chromium && echo yes || echo no"],
                                           entrypoint=[], network_mode="none", remove=True)
        assert out.strip() == b"no"
        assert ensure_image(tag, browser=False, progress=lines.append) == image_id  # current now
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag)
