"""A person on the test homeserver: matrix-nio's AsyncClient as a user would run it, driven from a
trio test through an asyncio bridge of its own (tests/matrix_server.py starts the server)."""

from __future__ import annotations

from typing import Any

import trio

from ngb.aio_bridge import AsyncioBridge
from tests.matrix_server import MatrixUser


class Person:
    def __init__(self, bridge: AsyncioBridge, base_url: str, user: MatrixUser) -> None:
        self.bridge = bridge
        self.base_url = base_url
        self.user = user
        self.client: Any = None
        self.seen: list[Any] = []  # every timeline event synced, oldest first

    async def connect(self) -> Person:
        def make() -> Any:
            from nio import AsyncClient, AsyncClientConfig

            client = AsyncClient(self.base_url, self.user.user_id, device_id=self.user.device_id,
                                 config=AsyncClientConfig(encryption_enabled=False))
            client.access_token = self.user.access_token
            return client

        self.client = await self.bridge.call_sync(make)
        await self.sync()
        return self

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from nio import ErrorResponse

        answer = await self.bridge.call(getattr(self.client, method), *args, **kwargs)
        assert not isinstance(answer, ErrorResponse), answer
        return answer

    async def sync(self, timeout_ms: int = 0) -> None:
        answer = await self.call("sync", timeout=timeout_ms)
        for room in answer.rooms.join.values():
            self.seen.extend(room.timeline.events)

    async def create_room(self, *invite: str, name: str = "team") -> str:
        answer = await self.call("room_create", name=name, invite=list(invite))
        return str(answer.room_id)

    async def say(self, room_id: str, body: str, **content: Any) -> str:
        answer = await self.call("room_send", room_id, "m.room.message", {"msgtype": "m.text", "body": body, **content})
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
