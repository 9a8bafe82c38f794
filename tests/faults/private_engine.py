"""A private Docker engine for tests that kill the engine: its own dockerd (and managed containerd)
with its own socket, data root and exec root under a temporary folder, so restarting it disturbs
no other test and no other user of the machine's engine. The agent image is copied into it
(`docker save | docker load`, ~7 s). Whatever happens, the engine is stopped at the end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

IMAGE = "nanogridbot-agent:latest"


class PrivateEngine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        config = self.root / "daemon.json"  # not the machine's /etc/docker/daemon.json (hosts, roots)
        if not config.exists():
            config.write_text("{}")
        log = (self.root / "dockerd.log").open("ab")
        # In a network namespace of its own: a dockerd started with `--bridge none` deletes the
        # host's `docker0` (libnetwork removes the default bridge interface it was told not to use),
        # which broke every container of the machine's engine after this test. Its containers need
        # no network (the agent runs with network "none"); its API is a unix socket on disk.
        self.proc = subprocess.Popen(
            [
                shutil.which("unshare") or "unshare", "--net",
                shutil.which("dockerd") or "dockerd",
                "--config-file", str(config),
                "--host", self.host,
                "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "docker.pid"),
                "--bridge", "none",
                "--iptables=false",
                "--ip6tables=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_ready()

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=60)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            try:
                self.client().ping()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        raise AssertionError(f"the private engine did not start: {self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """Stop the engine with `sig` (SIGKILL: a crash; SIGTERM: a clean stop, containers stopped)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self, sig: int = signal.SIGKILL, down_for: float = 0.0) -> None:
        self.kill(sig)
        self._forget_dead_containerd()
        time.sleep(down_for)
        self.restarts += 1
        self.start()

    def _forget_dead_containerd(self) -> None:
        """The managed containerd dies with a killed dockerd (parent-death signal); where nothing
        reaps it (a container's PID 1 that is no init) it stays a zombie, and a new dockerd would
        wait for that "running" containerd forever. A real host's init reaps it; do its part."""
        pid_file = self.root / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pid_file.read_text().strip())
            state = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ValueError):
            pid_file.unlink(missing_ok=True)
            return
        if "\nState:\tZ" in state:
            pid_file.unlink(missing_ok=True)

    def _our_processes(self) -> list[int]:
        """Processes of this engine (containerd shims outlive dockerd), found by our root path."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if str(self.root).encode() in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids

    def load_image(self, image: str = IMAGE) -> None:
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", self.host, "load"], stdin=save.stdout, capture_output=True)
        assert save.stdout is not None
        save.stdout.close()
        assert save.wait() == 0 and load.returncode == 0, load.stderr.decode()[-2000:]

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.root / "dockerd.log").read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        try:
            client = self.client()
            for c in client.containers.list(all=True):
                c.remove(force=True)
        except Exception:  # noqa: BLE001 - the engine may be down; stopping it is what matters
            pass
        self.kill(signal.SIGTERM)
        # A managed containerd left behind by a SIGKILLed dockerd: ours, found by its pid file.
        pid_file = self.root / "exec" / "containerd" / "containerd.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
        time.sleep(0.5)
        for pid in self._our_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root))]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_engine(agent_image: str) -> Iterator[PrivateEngine]:
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.fail("a private Docker engine needs root and dockerd (scripts/test.sh installs docker.io)")
    engine = PrivateEngine(Path(tempfile.mkdtemp(prefix="ngbd.", dir="/tmp")))
    try:
        engine.start()
        engine.load_image()
        yield engine
    finally:
        engine.close()
