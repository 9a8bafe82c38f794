"""A person on the test homeserver: matrix-nio's AsyncClient as a user would run it, driven from a
trio test through an asyncio bridge of its own (tests/matrix_server.py starts the server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from ngb.aio_bridge import AsyncioBridge
from tests.matrix_server import MatrixUser


class Person:
    def __init__(self, bridge: AsyncioBridge, base_url: str, user: MatrixUser, store: Path | None = None) -> None:
        self.bridge = bridge
        self.base_url = base_url
        self.user = user
        self.store = store  # a folder: end-to-end encryption on, its keys kept there
        self.client: Any = None
        self.seen: list[Any] = []  # every timeline event synced, oldest first

    async def connect(self) -> Person:
        def make() -> Any:
            from nio import AsyncClient, AsyncClientConfig

            encrypted = self.store is not None
            client = AsyncClient(self.base_url, self.user.user_id, device_id=self.user.device_id,
                                 store_path=str(self.store) if encrypted else "",
                                 config=AsyncClientConfig(encryption_enabled=encrypted, store_sync_tokens=False))
            client.access_token = self.user.access_token
            if encrypted:
                client.restore_login(self.user.user_id, self.user.device_id, self.user.access_token)
            return client

        if self.store is not None:
            self.store.mkdir(parents=True, exist_ok=True)
        self.client = await self.bridge.call_sync(make)
        await self.sync()
        return self

    async def keys(self) -> None:
        """Encryption upkeep, as a client does after each sync."""
        c = self.client
        if self.store is None or c.olm is None:
            return
        if c.should_upload_keys:
            await self.call("keys_upload")
        if c.should_query_keys:
            await self.call("keys_query")
        if c.should_claim_keys:
            await self.call("keys_claim", c.get_users_for_key_claiming())

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from nio import ErrorResponse

        answer = await self.bridge.call(getattr(self.client, method), *args, **kwargs)
        assert not isinstance(answer, ErrorResponse), answer
        return answer

    async def sync(self, timeout_ms: int = 0) -> None:
        answer = await self.call("sync", timeout=timeout_ms, full_state=not self.seen)
        for room in answer.rooms.join.values():
            self.seen.extend(room.timeline.events)
        await self.keys()

    async def create_room(self, *invite: str, name: str = "team", encrypted: bool = False) -> str:
        state = [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
        answer = await self.call("room_create", name=name, invite=list(invite), is_direct=encrypted,
                                 initial_state=state if encrypted else [])
        return str(answer.room_id)

    async def say(self, room_id: str, body: str, **content: Any) -> str:
        answer = await self.call("room_send", room_id, "m.room.message", {"msgtype": "m.text", "body": body, **content},
                                 ignore_unverified_devices=True)
        return str(answer.event_id)

    async def raw_event(self, room_id: str, event_id: str) -> dict[str, Any]:
        """The event as the server holds it (no decryption)."""
        import httpx

        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            r = await http.get(f"/_matrix/client/v3/rooms/{room_id}/event/{event_id}",
                               headers={"Authorization": f"Bearer {self.user.access_token}"})
            r.raise_for_status()
            return dict(r.json())

    async def upload(self, data: bytes, mime: str, name: str, *, encrypt: bool = False) -> dict[str, Any]:
        """The bytes into the content repository, as a client uploads a file; the content keys that
        name it: ``{"url": mxc}``, or for an encrypted room ``{"file": {...}}`` (nio encrypts)."""
        import httpx
        from nio.crypto.attachments import encrypt_attachment

        keys: dict[str, Any] = {}
        if encrypt:
            data, keys = encrypt_attachment(data)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            r = await http.post("/_matrix/media/v3/upload", params={"filename": name}, content=data,
                                headers={"Authorization": f"Bearer {self.user.access_token}",
                                         "Content-Type": "application/octet-stream" if encrypt else mime})
            r.raise_for_status()
        mxc = r.json()["content_uri"]
        return {"file": {**keys, "url": mxc}} if encrypt else {"url": mxc}

    async def download(self, mxc: str) -> bytes:
        """A file's bytes as the server keeps them (authenticated media)."""
        import httpx

        where = mxc.removeprefix("mxc://")
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            r = await http.get(f"/_matrix/client/v1/media/download/{where}",
                               headers={"Authorization": f"Bearer {self.user.access_token}"})
            r.raise_for_status()
            return r.content

    async def send(self, room_id: str, content: dict[str, Any]) -> str:
        answer = await self.call("room_send", room_id, "m.room.message", content, ignore_unverified_devices=True)
        return str(answer.event_id)

    async def members(self, room_id: str) -> list[str]:
        answer = await self.call("joined_members", room_id)
        return [m.user_id for m in answer.members]

    async def wait_for(self, predicate: Any, timeout: float = 15) -> list[Any]:
        """Sync until some events seen match ``predicate(source)``; returns those events' sources."""
        with trio.fail_after(timeout):
            while not (found := [e.source for e in self.seen if predicate(e.source)]):
                await self.sync(timeout_ms=500)
            return found

    async def close(self) -> None:
        if self.client is not None:
            await self.bridge.call(self.client.close)
