"""A scheduled task's pre-script: run in the agent's sandbox, reported as it ended (the host
decides what the result means)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import attrs

from .protocol import Prescript, PrescriptResult
from .settings import PRESCRIPT_STDERR, PRESCRIPT_STDOUT


async def _capped(stream: asyncio.StreamReader, cap: int, tail: bool) -> tuple[bytes, bool]:
    kept, over = b"", False
    while chunk := await stream.read(65536):
        kept += chunk
        if len(kept) > cap:
            over = True
            kept = kept[-cap:] if tail else kept[:cap]
    return kept, over


async def run_prescript(frame: Prescript, cwd: Path) -> PrescriptResult:
    """Run ``frame.command`` with ``/bin/sh -c`` in ``cwd`` (when it exists): exit status, output
    (stdout capped, stderr's tail) and whether it timed out."""
    result = PrescriptResult(id=frame.id)
    timeout = float(frame.timeout or 60)
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            frame.command,
            cwd=str(cwd) if cwd.is_dir() else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return attrs.evolve(result, error=f"cannot start /bin/sh: {exc}")
    assert proc.stdout is not None and proc.stderr is not None
    try:
        (out, over), (err, _) = await asyncio.wait_for(
            asyncio.gather(
                _capped(proc.stdout, PRESCRIPT_STDOUT, False), _capped(proc.stderr, PRESCRIPT_STDERR, True)
            ),
            timeout,
        )
        exit_code = await asyncio.wait_for(proc.wait(), max(1.0, timeout))
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        return attrs.evolve(result, timed_out=True, timeout=timeout)
    return attrs.evolve(
        result,
        exit_code=exit_code,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        truncated=over,
    )
