"""What the channel tests share: waiting for a condition, reading a chat's stored messages, and an
agent behaviour that answers each message of a batch."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import trio


async def wait_until(predicate: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll predicate until it is truthy (returns its value); fail after timeout seconds."""
    with trio.fail_after(timeout):
        while not (value := predicate()):
            await trio.sleep(0.01)
        return value


async def stored(d: Any, chat: str) -> list[Any]:
    """Every stored message of chat, oldest first."""
    return await d.daemon.store.messages_after(chat, 0)


def echo_each(prompt: str) -> list[str]:
    """A FakeBehaviour reply: one "Echo: ..." per message in the prompt."""
    return [f"Echo: {t}" for t in re.findall(r">([^<]*)</message>", prompt)]
