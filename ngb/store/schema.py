"""The database schema: numbered migrations applied in order from an empty database, each in
one transaction (`PRAGMA user_version` records the last one applied), after a copy of an existing
database is taken (ngb/store/copy.py). A migration is never edited once released: a change is a
new one at the end."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from .copy import pre_migration_backup

log = logging.getLogger("ngb.store")

MIGRATIONS: list[str] = [
    # 1: the core tables
    """
    CREATE TABLE groups (
        chat TEXT PRIMARY KEY,
        folder TEXT NOT NULL UNIQUE COLLATE NOCASE,
        is_main INTEGER NOT NULL DEFAULT 0,
        requires_trigger INTEGER NOT NULL DEFAULT 1,
        trigger TEXT,
        allowed_senders TEXT NOT NULL DEFAULT '[]',
        mounts TEXT NOT NULL DEFAULT '[]',
        added_at TEXT NOT NULL
    );
    CREATE TABLE chats (
        chat TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        name TEXT,
        last_message_at TEXT
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        chat TEXT NOT NULL,
        channel TEXT NOT NULL,
        platform_id TEXT,
        sender TEXT NOT NULL,
        sender_id TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        time TEXT NOT NULL,
        from_bot INTEGER NOT NULL DEFAULT 0,
        mentions_bot INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX messages_platform_id ON messages(channel, platform_id);
    CREATE INDEX messages_chat_id ON messages(chat, id);
    CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='id');
    CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    CREATE TABLE cursors (
        folder TEXT PRIMARY KEY,
        last_message_id INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        folder TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        folder TEXT NOT NULL,
        chat TEXT NOT NULL,
        text TEXT NOT NULL,
        reply_to TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT,
        message_id INTEGER
    );
    CREATE INDEX outbox_pending ON outbox(state, id);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE failed_turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        folder TEXT NOT NULL,
        up_to_message INTEGER NOT NULL,
        reason TEXT NOT NULL,
        time TEXT NOT NULL
    );
    """,
    # 2: scheduled tasks and their runs
    """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        folder TEXT NOT NULL,
        chat TEXT NOT NULL,
        prompt TEXT NOT NULL,
        schedule_kind TEXT NOT NULL,
        schedule_value TEXT NOT NULL,
        timezone TEXT NOT NULL DEFAULT 'UTC',
        context_mode TEXT NOT NULL DEFAULT 'group',
        status TEXT NOT NULL DEFAULT 'active',
        next_run TEXT,
        last_run TEXT,
        last_result TEXT,
        pre_script TEXT,
        created_by TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE INDEX tasks_due ON tasks(status, next_run);
    CREATE TABLE task_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        outcome TEXT NOT NULL DEFAULT 'running',
        error TEXT,
        tokens INTEGER
    );
    CREATE INDEX task_runs_task ON task_runs(task_id, id);
    """,
    # 3: exactly-once task runs: the slot a run was claimed for is unique per task; a run is
    # 'queued' (claimed, not yet handed to the agent) or 'running' until it ends.
    """
    ALTER TABLE task_runs ADD COLUMN scheduled_for TEXT;
    ALTER TABLE task_runs ADD COLUMN result TEXT;
    CREATE UNIQUE INDEX task_runs_slot ON task_runs(task_id, scheduled_for);
    CREATE INDEX task_runs_open ON task_runs(outcome, task_id) WHERE outcome IN ('queued', 'running');
    """,
    # 4: per-group rate limits (NULL: the daemon's defaults)
    """
    ALTER TABLE groups ADD COLUMN sender_rate_per_minute INTEGER;
    ALTER TABLE groups ADD COLUMN group_rate_per_minute INTEGER;
    """,
    # 5: model token usage per UTC day, group and model (upsert-added by ngb/store/usage.py); per-group
    # spending cap overrides (folder '*': the global caps; NULL: the config default; 0: no cap);
    # the budget notices already sent (one per group, cap and period)
    """
    CREATE TABLE usage (
        day TEXT NOT NULL,
        folder TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
        requests INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, folder, model)
    ) WITHOUT ROWID;
    CREATE INDEX usage_folder_day ON usage(folder, day);
    CREATE TABLE budget_caps (
        folder TEXT PRIMARY KEY,
        daily_usd REAL,
        monthly_usd REAL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE budget_notices (
        folder TEXT NOT NULL,
        notice TEXT NOT NULL,
        sent_at TEXT NOT NULL,
        PRIMARY KEY (folder, notice)
    );
    """,
    # 6: senders not on a group's allow-list may reach its prompt as marked context (0: never)
    """
    ALTER TABLE groups ADD COLUMN unlisted_context INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: usage also counts the 1-hour share of the cache writes (priced higher; cache_creation_tokens
    # stays the total) and server tool requests (web search, web fetch): ngb/budgets.py prices them
    """
    ALTER TABLE usage ADD COLUMN cache_creation_1h_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN web_search_requests INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN web_fetch_requests INTEGER NOT NULL DEFAULT 0;
    """,
    # 8: per chat, the newest platform message id a channel has stored (moved only after the store),
    # so its catch-up after a reconnect or a restart starts there (Discord, Slack, QQ)
    """
    CREATE TABLE channel_marks (
        chat TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        mark TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 9: the files messages carry (ngb/media): metadata here, the bytes in state/media/ by sha256. A
    # row belongs to a stored message, or to an outbox row until it is delivered (then to both).
    """
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        chat TEXT NOT NULL,
        message_id INTEGER,
        outbox_id INTEGER,
        kind TEXT NOT NULL,
        mime TEXT NOT NULL,
        size INTEGER NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        transcript TEXT,
        transcript_source TEXT,
        gone INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE INDEX attachments_message ON attachments(message_id);
    CREATE INDEX attachments_outbox ON attachments(outbox_id);
    CREATE INDEX attachments_sha ON attachments(sha256);
    CREATE INDEX attachments_chat ON attachments(chat, gone);
    CREATE TRIGGER messages_attachments_ad AFTER DELETE ON messages BEGIN
        DELETE FROM attachments WHERE message_id = old.id AND outbox_id IS NULL;
    END;
    """,
    # 10: the web through the egress door (docs/web-access.md): a group's mode (NULL: the daemon's
    # default) and host patterns (JSON lists); each request the door decided (kept bounded by
    # ngb/store/web.py) and the per-group, per-UTC-day sums (upsert-added, kept)
    """
    ALTER TABLE groups ADD COLUMN web TEXT;
    ALTER TABLE groups ADD COLUMN web_allow TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE groups ADD COLUMN web_deny TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE web_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        folder TEXT NOT NULL,
        time TEXT NOT NULL,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        method TEXT NOT NULL,
        verdict TEXT NOT NULL,
        rule TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        bytes_up INTEGER NOT NULL DEFAULT 0,
        bytes_down INTEGER NOT NULL DEFAULT 0,
        duration_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX web_log_folder_time ON web_log(folder, time);
    CREATE INDEX web_log_time ON web_log(time);
    CREATE TABLE web_usage (
        folder TEXT NOT NULL,
        day TEXT NOT NULL,
        requests INTEGER NOT NULL DEFAULT 0,
        refused INTEGER NOT NULL DEFAULT 0,
        bytes_up INTEGER NOT NULL DEFAULT 0,
        bytes_down INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (folder, day)
    ) WITHOUT ROWID;
    CREATE INDEX web_usage_day ON web_usage(day);
    """,
    # 11: direct messages from strangers waiting for the operator (ngb/pairing.py): one row per
    # chat (its newest code); kept after approval or denial as the record of who was let in
    """
    CREATE TABLE pairings (
        code TEXT PRIMARY KEY,
        chat TEXT NOT NULL UNIQUE,
        sender TEXT NOT NULL DEFAULT '',
        sender_id TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        expires TEXT NOT NULL,
        notified TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        folder TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX pairings_state ON pairings(state, created);
    """,
    # 12: live previews (docs/conversations.md): a group's choice (NULL: the daemon's default) and
    # the preview message a reply is to replace (edited to the final text instead of a new send)
    """
    ALTER TABLE groups ADD COLUMN previews INTEGER;
    ALTER TABLE outbox ADD COLUMN preview_id TEXT;
    """,
    # 13: threads and reactions (docs/conversations.md): the thread or topic a message is in ('' =
    # the chat's own timeline), a group's thread mode (NULL: the daemon's), per thread of a
    # per_thread group its own cursor and session (the group's cursor stays the floor below every
    # thread's); a reaction is stored as a message with the platform id of the one it is on
    """
    ALTER TABLE messages ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    CREATE INDEX messages_chat_thread ON messages(chat, thread, id);
    ALTER TABLE groups ADD COLUMN threads TEXT;
    ALTER TABLE outbox ADD COLUMN thread TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN reaction_to TEXT;
    CREATE TABLE thread_state (
        folder TEXT NOT NULL,
        thread TEXT NOT NULL,
        last_message_id INTEGER NOT NULL DEFAULT 0,
        session_id TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (folder, thread)
    ) WITHOUT ROWID;
    """,
    # 14: activity per UTC hour ('2026-12-04T21') and group folder, for the dashboard's charts
    # (ngb/activity.py adds to it in batches; rows older than 90 days are dropped)
    """
    CREATE TABLE activity (
        hour TEXT NOT NULL,
        folder TEXT NOT NULL,
        messages_in INTEGER NOT NULL DEFAULT 0,
        messages_out INTEGER NOT NULL DEFAULT 0,
        turns INTEGER NOT NULL DEFAULT 0,
        failed_turns INTEGER NOT NULL DEFAULT 0,
        replies INTEGER NOT NULL DEFAULT 0,
        reply_ms_sum INTEGER NOT NULL DEFAULT 0,
        reply_ms_max INTEGER NOT NULL DEFAULT 0,
        cost_nanos INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, folder)
    ) WITHOUT ROWID;
    CREATE INDEX activity_folder_hour ON activity(folder, hour);
    """,
]


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path, *, backup_first: bool) -> None:
    """Apply the migrations the database at `path` (open on `conn`) lacks. With `backup_first`,
    an existing database is copied to state/backups/ before the first one runs: no copy, no
    migration."""
    current = schema_version(conn)
    if 0 < current < len(MIGRATIONS) and backup_first:
        pre_migration_backup(conn, path, current, len(MIGRATIONS))
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= current:
            continue
        log.info("store: applying migration %d", number)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in split_sql(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def split_sql(script: str) -> Sequence[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buf: list[str] = []
    for line in script.strip().splitlines():
        buf.append(line)
        candidate = "\n".join(buf).strip()
        if candidate.endswith(";") and sqlite3.complete_statement(candidate):
            statements.append(candidate)
            buf = []
    if "\n".join(buf).strip():
        statements.append("\n".join(buf).strip())
    return statements
