"""Errors every layer shares: a message refused at the door (raised by the router, seen by the
channels and the web, which sit above it), and unwrapping trio's exception groups where a single
failure should surface as itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside a (nested) exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def single(group: BaseExceptionGroup) -> BaseException | None:
    """The one leaf exception of a nested group, or None when there are several."""
    found = leaves(group)
    return found[0] if len(found) == 1 else None


@contextlib.contextmanager
def one_error() -> Iterator[None]:
    """Nurseries wrap a task's failure in an ExceptionGroup; a block that failed for one reason
    raises that reason (so callers can catch it by type and logs stay readable)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = single(group)
        if isinstance(leaf, Exception):
            raise leaf from None
        raise


class MessageRejected(ValueError):
    """The message was refused before it was stored (too large, empty)."""


class MessageDropped(MessageRejected):
    """A message of a chat nobody registered, past the unregistered quota: counted, not stored,
    not logged one by one (the router logs once per chat and hour)."""
