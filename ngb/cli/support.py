"""What every `ngb` command shares: the one-line failure, a client for the running daemon that
carries its API token, and the state opened directly when no daemon runs."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from ..config import Config


def fail(message: str, code: int = 2) -> int:
    print(f"ngb: {message}", file=sys.stderr)
    return code


class ApiRefused(Exception):
    """The running daemon wants a token this command does not have (one line for the user)."""


def api_client(config: Config) -> httpx.Client:
    """A client for the running daemon, with its token: NGB_API_TOKEN / the configured one, else the
    one the daemon generated into its state dir (ngb/api_token.py)."""
    from ..api_token import TokenUnavailable, base_url, client_token

    url = base_url(config)
    try:
        headers, problem = {"Authorization": f"Bearer {client_token(config)}"}, ""
    except TokenUnavailable as exc:
        headers, problem = {}, str(exc)

    def refused(response: httpx.Response) -> None:
        if response.status_code == 401:
            raise ApiRefused(
                f"the daemon at {url} needs its API token: {problem}"
                if problem
                else f"the daemon at {url} refused the API token (NGB_API_TOKEN, the configured one, or the "
                "state dir's): check it, and that this is that daemon's state_dir"
            )

    return httpx.Client(base_url=url, headers=headers, timeout=10, event_hooks={"response": [refused]})


def daemon_client(config: Config) -> httpx.Client | None:
    """A client for the running daemon, or None when none answers."""
    client = api_client(config)
    try:
        client.get("/healthz")
        return client
    except httpx.TransportError:
        client.close()
        return None


def with_store(config: Config, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run fn(registry) against the state directly (the daemon is not running); the registry's
    store is `registry.store`."""
    from ..groups import GroupRegistry
    from ..store import Store

    async def main() -> Any:
        store = Store(config.db_path)
        await store.open()
        try:
            registry = GroupRegistry(store, config.groups_dir, config.global_dir, agent_uid=config.agent_uid)
            await registry.load()
            return await fn(registry)
        finally:
            await store.close()

    previous = os.umask(0o077)  # what this writes is the daemon's state: never readable by the host's others
    try:
        return trio.run(main)
    finally:
        os.umask(previous)
