"""Log output: journald's native protocol against a socket standing in for the journal, the JSON
lines, and the group/chat fields that the actor, router and outbox put on every line."""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb import logs
from tests.fakes.agent import FakeBehaviour


def parse_journal(data: bytes) -> dict[str, str]:
    """The inverse of the native protocol: KEY=value lines, or KEY\\n<u64 length><value>\\n."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            i = nl + 1
        else:
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            fields[line.decode()] = data[nl + 9 : nl + 9 + size].decode()
            assert data[nl + 9 + size : nl + 10 + size] == b"\n"
            i = nl + 10 + size
    return fields


@pytest.fixture
def journal(tmp_path: Path):
    path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_journal_entries_carry_group_chat_and_priority(journal) -> None:
    path, sock = journal
    handler = logs.JournalHandler(path, identifier="nanogridbot-test")
    handler.addFilter(logs.ContextFields())
    log = logging.getLogger("ngb.test.journal")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        with logs.log_context(group="family", chat="local:family"):
            log.warning("turn failed: %s", "boom")
            try:
                raise ValueError("bad\nframe")
            except ValueError:
                log.exception("actor crashed")
        log.info("no group here")
    finally:
        log.removeHandler(handler)
        handler.close()
    first, second, third = (parse_journal(sock.recv(65536)) for _ in range(3))
    assert first["MESSAGE"] == "turn failed: boom" and first["PRIORITY"] == "4"
    assert (first["NGB_GROUP"], first["NGB_CHAT"]) == ("family", "local:family")
    assert first["SYSLOG_IDENTIFIER"] == "nanogridbot-test" and first["LOGGER"] == "ngb.test.journal"
    assert second["PRIORITY"] == "3" and second["MESSAGE"].startswith("actor crashed\nTraceback")
    assert "ValueError: bad\nframe" in second["MESSAGE"]  # one entry, newlines and all
    assert third["PRIORITY"] == "6" and "NGB_GROUP" not in third


def test_a_missing_journal_falls_back_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handler = logs.JournalHandler(tmp_path / "gone.sock")
    record = logging.LogRecord("ngb.x", logging.ERROR, __file__, 1, "still said", None, None)
    record.group, record.chat = "g", None
    handler.emit(record)
    handler.close()
    assert "ERROR   ngb.x: [g] still said" in capsys.readouterr().err


@pytest.fixture
def root_logging():
    """setup_logging changes the root logger and the noisy loggers' levels: put them back."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    noisy = {name: logging.getLogger(name).level for name in logs.NOISY}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, value in noisy.items():
        logging.getLogger(name).setLevel(value)


def test_json_lines(capsys: pytest.CaptureFixture[str], root_logging: None) -> None:
    handler = logs.setup_logging("info", "json")
    try:
        with logs.log_context(group="work", chat="slack:C1"):
            logging.getLogger("ngb.test.json").warning("rate limited %d", 3)
        logging.getLogger("ngb.test.json").debug("not at info")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    assert lines[0] | {"time": "x"} == {"time": "x", "level": "warning", "logger": "ngb.test.json",
                                        "message": "rate limited 3", "group": "work", "chat": "slack:C1"}


def test_auto_picks_the_journal_only_when_stderr_is_connected_to_it(tmp_path: Path, monkeypatch, journal) -> None:
    path, _sock = journal
    stream = open(tmp_path / "stderr", "w")  # noqa: SIM115 - stands in for the journal's stream
    monkeypatch.setattr(sys, "stderr", stream)
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert logs.resolve_format("auto", journal_socket=path) == "journal"
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # a child's stderr went elsewhere
    assert logs.resolve_format("auto", journal_socket=path) == "text"
    monkeypatch.delenv("JOURNAL_STREAM")
    assert logs.resolve_format("auto", journal_socket=path) == "text"
    assert logs.resolve_format("json", journal_socket=path) == "json"
    stream.close()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.ContextFields())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_the_daemon_names_group_and_chat_on_its_lines(run_daemon) -> None:
    collect = Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    try:
        d = await run_daemon(FakeBehaviour(crash_on=lambda prompt: "crash me" in prompt))
        await d.post("main", "crash me please")
        with trio.fail_after(10):
            while not [r for r in collect.records if "turn failed" in r.getMessage()]:
                await trio.sleep(0.02)
    finally:
        root.removeHandler(collect)
    failed = [r for r in collect.records if "turn failed" in r.getMessage()]
    assert {(r.group, r.chat) for r in failed} == {("main", "local:main")}
    other: Any = [r for r in collect.records if r.name.startswith("ngb.web")]
    assert all(r.group is None for r in other)  # the web server is no group's


# -- redaction: no secret in any format, exception text and tracebacks included ---------------------
SECRET = "ngb-test-secret-Zq81x7Kc"  # a configured secret (no well-known token shape)


def _call_upstream() -> None:
    url = "https://api.example/botngb-test-secret-Zq81x7Kc/getMe"  # this source line shows in the traceback
    raise ConnectionError(f"All connection attempts failed: {url}")


def _fail() -> None:
    try:
        _call_upstream()
    except ConnectionError as exc:
        exc.add_note(f"headers: Authorization: Bearer {SECRET}")
        raise RuntimeError(f"telegram: getMe failed with token {SECRET}") from exc


def _log_the_failure(log: logging.Logger) -> None:
    try:
        _fail()
    except RuntimeError:
        log.exception("upstream failed for %s", SECRET, stack_info=True)  # ngb-test-secret-Zq81x7Kc


def _assert_redacted(out: str) -> None:
    assert SECRET not in out
    # what helps debugging is all still there
    for kept in ("upstream failed for <redacted>", "RuntimeError: telegram: getMe failed with token <redacted>",
                 "ConnectionError: All connection attempts failed: https://api.example/bot<redacted>/getMe",
                 "direct cause", "Authorization: Bearer <redacted>", "Stack (most recent call last)"):
        assert kept in out, kept


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_in_an_exception_or_traceback_is_redacted(fmt: str, capsys: pytest.CaptureFixture[str],
                                                            root_logging: None) -> None:
    handler = logs.setup_logging("info", fmt, secrets=[SECRET])
    try:
        _log_the_failure(logging.getLogger("somesdk.client"))  # any logger, not only ours
    finally:
        logging.getLogger().removeHandler(handler)
        logs.remove_secret(SECRET)
    err = capsys.readouterr().err
    if fmt == "json":
        (line,) = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        err = "\n".join([line["message"], line["exception"], line["stack"]])
    _assert_redacted(err)


def test_a_secret_in_an_exception_is_redacted_in_the_journal(journal) -> None:
    path, sock = journal
    handler = logs.JournalHandler(path)
    handler.addFilter(logs.ContextFields())
    log = logging.getLogger("ngb.test.journal_redact")
    log.addHandler(handler)
    log.propagate = False
    logs.add_secret(SECRET)
    try:
        _log_the_failure(log)
    finally:
        log.removeHandler(handler)
        handler.close()
        logs.remove_secret(SECRET)
    data = sock.recv(1 << 20)
    assert SECRET.encode() not in data
    _assert_redacted(parse_journal(data)["MESSAGE"])


def test_other_handlers_see_the_record_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """pytest's handler, a plugin's handler: the filter redacts the record itself, exception text too."""
    from ngb.channels.common import redact_in_logs

    redact_in_logs(SECRET)
    try:
        with caplog.at_level(logging.ERROR):
            _log_the_failure(logging.getLogger("ngb.test.caplog"))
    finally:
        logs.remove_secret(SECRET)
    _assert_redacted(caplog.text)


def test_secrets_from_the_environment_and_well_known_token_shapes(monkeypatch, capsys, root_logging: None) -> None:
    monkeypatch.setenv("NGB_TELEGRAM_TOKEN", "env-telegram-token-9f8e7d")
    monkeypatch.setenv("NGB_API_TOKEN_FILE", "/etc/ngb/api-token")  # a path, not a secret
    monkeypatch.setenv("ANTHROPIC_API_KEY", "plain-anthropic-key-123456")
    handler = logs.setup_logging("info", "text")
    try:
        log = logging.getLogger("ngb.test.env")
        log.warning("token env-telegram-token-9f8e7d, key plain-anthropic-key-123456, file /etc/ngb/api-token")
        log.warning("never configured: sk-ant-api03-abcdefghijklmnop and bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw")
    finally:
        logging.getLogger().removeHandler(handler)
        for value in ("env-telegram-token-9f8e7d", "plain-anthropic-key-123456"):
            logs.remove_secret(value)
    err = capsys.readouterr().err
    assert "token <redacted>, key <redacted>, file /etc/ngb/api-token" in err
    assert "never configured: sk-ant-<redacted> and bot123456789:<redacted>" in err
