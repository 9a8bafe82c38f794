"""A real daemon process (`python -m ngb run`) for the fault tests: spawn, wait until healthy, kill
-9, stop with SIGTERM; plus small helpers that read its chat history and its containers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import httpx
import trio

from tests.conftest import api_headers, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
REAL_KEY = "sk-ant-test-REAL-KEY-must-never-leak-0123456789"


class DaemonProcess:
    def __init__(self, tmp: Path, upstream: str, instance: str, **env: str) -> None:
        self.state = tmp / "state"
        self.log = tmp / "daemon.log"
        self.port = free_port()
        self.upstream = upstream
        self.instance = instance
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        host = env.get("DOCKER_HOST")
        self.docker = docker.DockerClient(base_url=host, timeout=60) if host else docker.from_env()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self._spawn()
        with trio.fail_after(30):
            while True:
                assert self.proc is not None and self.proc.poll() is None, f"the daemon exited: {self.tail()}"
                try:
                    if (await self.http.get("/healthz")).status_code == 200:
                        self.http.headers.update(api_headers(self.state))  # the token it generated
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.03)

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.update(
            NGB_STATE_DIR=str(self.state),
            NGB_WEB_PORT=str(self.port),
            NGB_MODEL_UPSTREAM=self.upstream,
            ANTHROPIC_API_KEY=REAL_KEY,
            NGB_INSTANCE=self.instance,
            NGB_IDLE_TIMEOUT="1",
            NGB_MOUNT_ALLOWLIST=str(self.state.parent / "none.toml"),
        )
        env.update(self.extra_env)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ngb", "run", "--no-build"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM, wait; kill -9 if it hangs. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def containers(self) -> list[Any]:
        # sparse: one listing call, no inspect per container (one removed meanwhile would 404)
        return self.docker.containers.list(all=True, sparse=True, filters={"label": f"ngb.instance={self.instance}"})

    def remove_containers(self) -> None:
        for c in self.containers():
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass

    async def aclose(self) -> None:
        self.stop()
        try:  # kept for a look after a failure (pytest's tmp folders rotate under parallel runs)
            keep = Path(os.environ.get("NGB_FAULT_LOGS", "/tmp/ngb-fault-logs"))
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{self.instance}.log").write_bytes(self.log.read_bytes())
        except OSError:
            pass
        self.remove_containers()
        await self.http.aclose()

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    async def post(self, chat: str, text: str, sender: str = "alice") -> int:
        r = await self.http.post(f"/api/chats/{chat}/messages", json={"sender": sender, "text": text})
        assert r.status_code == 202, r.text
        return int(r.json()["id"])

    async def history(self, chat: str = "main") -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/chats/{chat}/messages", params={"after": 0, "limit": 1000})
        assert r.status_code == 200, r.text
        return list(r.json())

    async def bot_texts(self, chat: str = "main") -> list[str]:
        return [m["text"] for m in await self.history(chat) if m["from_bot"]]

    async def wait_bot(self, predicate: Any, chat: str = "main", timeout: float = 90) -> list[str]:
        """Wait until a bot message satisfies `predicate`; returns every bot text."""
        with trio.fail_after(timeout):
            while True:
                texts = await self.bot_texts(chat)
                if any(predicate(t) for t in texts):
                    return texts
                await trio.sleep(0.05)

    async def actor(self, folder: str = "main") -> dict[str, Any]:
        actors = (await self.http.get("/debug/actors")).json()
        return next((a for a in actors if a.get("folder") == folder), {})

    async def wait_no_container(self, folder: str = "main", timeout: float = 30) -> None:
        with trio.fail_after(timeout):
            while True:
                a = await self.actor(folder)
                if a.get("container_id") is None and a.get("state") == "idle":
                    return
                await trio.sleep(0.05)
