"""Which batches of the host a turn of the agent answered.

Every ``input`` frame becomes one user message with its own uuid. The CLI takes prompts that
arrive while a turn runs into that turn (or merges queued ones into the next), so one answer can
cover several batches; it lists their uuids. Batches turns the SDK's messages back into the batch
numbers the host's ``output`` and ``result`` frames name.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs

from .protocol import Result


class Batches:
    def __init__(self) -> None:
        self.pending: dict[int, str] = {}  # batch -> message uuid, not yet answered
        self.uuid_batch: dict[str, int] = {}
        self.current: int | None = None
        self.last: int = 0

    def open(self, batch: int) -> str | None:
        """A new batch's message uuid; None when that batch is pending already."""
        if batch in self.pending:
            return None
        u = str(uuid.uuid4())
        self.pending[batch] = u
        self.uuid_batch[u] = batch
        if self.current is None:
            self.current = batch
        return u

    def of(self, msg: Any) -> list[int]:
        """The batches a message of the SDK names (by their uuids)."""
        uuids = list(getattr(msg, "user_message_uuids", None) or [])
        single = getattr(msg, "user_message_uuid", None)
        if single and single not in uuids:
            uuids.append(single)
        return sorted({self.uuid_batch[u] for u in uuids if u in self.uuid_batch})

    def speaking(self, msg: Any) -> int:
        """The batch an assistant message's text answers."""
        batches = self.of(msg)
        if batches:
            self.current = max(batches)
        return self.current if self.current is not None else self.last

    def results(self, msg: Any) -> list[Result]:
        """One ``result`` per batch this turn answered, in order; usage and cost on the last.
        A turn that took in no batch of ours (one the agent started itself) gets ``batch: null``."""
        batches = self.of(msg)
        origin_kind = (msg.origin or {}).get("kind") if isinstance(msg.origin, dict) else None
        if not batches and self.pending and origin_kind in (None, "human"):
            batches = [min(self.pending)]  # a CLI that does not echo message uuids
        if batches:
            top = max(batches)
            batches = sorted(set(batches) | {b for b in self.pending if b <= top})
        for b in batches:
            u = self.pending.pop(b, None)
            if u is not None:
                self.uuid_batch.pop(u, None)
        if batches:
            self.last = max(batches)
        self.current = min(self.pending) if self.pending else None
        usage = msg.usage or {}
        error = None
        if msg.is_error:
            parts = list(msg.errors or [])
            if msg.result and msg.result not in parts:
                parts.append(msg.result)
            error = "; ".join(str(p) for p in parts) or msg.subtype
            if msg.api_error_status and str(msg.api_error_status) not in error:
                error = f"{error} (HTTP {msg.api_error_status})"
        last = Result(
            batch=batches[-1] if batches else None,
            session_id=msg.session_id,
            is_error=bool(msg.is_error),
            error=error,
            usage={
                "input_tokens": int(usage.get("input_tokens") or 0),
                "output_tokens": int(usage.get("output_tokens") or 0),
                "cache_creation_input_tokens": int(usage.get("cache_creation_input_tokens") or 0),
                "cache_read_input_tokens": int(usage.get("cache_read_input_tokens") or 0),
            },
            cost_usd=msg.total_cost_usd,
            num_turns=msg.num_turns,
            duration_ms=msg.duration_ms,
            subtype=msg.subtype,
            api_error_status=msg.api_error_status,
        )
        earlier = [
            attrs.evolve(
                last, batch=b, merged_into=batches[-1], cost_usd=0.0, usage=dict.fromkeys(last.usage, 0)
            )
            for b in batches[:-1]
        ]
        return [*earlier, last]
