"""Names vulture (``[tool.vulture]`` in pyproject.toml) reports unused that are used: reached by
name (a registry's "module:name" strings, attrs records written out field by field, hooks and
overrides a library calls, attributes set on a library's objects), or kept for the tests and the
benchmarks. Vulture only reads this file: ``_.name`` marks ``name`` used. Each line says why."""

from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# -- reached by name -----------------------------------------------------------------------------
# ngb/channels/registry.py: REGISTRY names the settings readers and the channel classes as
# "module:name" strings, loaded with importlib.
_.telegram_settings
_.slack_settings
_.discord_settings
_.lark_settings
_.dingtalk_settings
_.matrix_settings
_.email_settings
_.TelegramChannel
_.SlackChannel
_.DiscordChannel
_.LarkChannel
_.DingTalkChannel
_.MatrixChannel
_.EmailChannel

# attrs records: their fields are written out by name (attrs.asdict, cattrs, the store's rows, the
# API's JSON), not read one by one.
_.added_at  # ngb/records.py Group
_.last_time  # ngb/records.py SenderSummary
_.last_run  # ngb/records.py Task
_.last_result  # ngb/records.py Task
_.ended_at  # ngb/records.py TaskRun
_.FAILED  # ngb/records.py OutboxState: the store's state column holds its value
_.cost_usd  # ngb/protocol.py Result: a field of the wire frame
_.merged_into  # ngb/protocol.py Result: a field of the wire frame (tests/test_runner_local.py)
_.updated_at  # ngb/store/groups.py StoredSession: /api/sessions
_.vetoed_by  # ngb/plugins/api.py TurnDecision: for plugins (tests/test_plugins.py)
_.last_turn_error  # ngb/actor_view.py ActorView: /debug/actors shows attrs.asdict(view)
_.last_crash_at  # ngb/actor_view.py ActorView: /debug/actors
_.api_token_file  # ngb/config/settings.py Config: read by name (config/loading.py _SECRET_FILES)
_.logs_dir  # ngb/config/settings.py Config: the paths loop in Config reads it with getattr
_.components  # ngb/sandbox/debian_mirror.py AptSource: the parsed sources line (tests/test_image.py)

# -- called or read by a library -------------------------------------------------------------------
_.collect  # ngb/metrics.py: prometheus_client calls a custom collector's collect()
_.open_connection  # ngb/channels/dingtalk_stream.py: overrides the SDK's blocking method
_.get_access_token  # ngb/channels/dingtalk_stream.py: overrides the SDK's blocking method
_.row_factory  # sqlite3.Connection: rows as sqlite3.Row (ngb/store/core.py, ngb/ops/checks_sandbox.py)
_.accesslog  # hypercorn Config (ngb/web/app.py)
_.errorlog  # hypercorn Config
_.graceful_timeout  # hypercorn Config
_.keep_alive_timeout  # hypercorn Config
_.BASE  # discord.py's http.Route: the API base (ngb/channels/discord.py)
_.guilds  # discord.Intents
_.guild_messages  # discord.Intents
_.dm_messages  # discord.Intents
_.warn_nacl  # discord.VoiceClient: no voice warnings
_.warn_dave  # discord.VoiceClient: no voice warnings
_.wss_uri  # slack_sdk's SocketModeClient: the session's URL (ngb/channels/slack.py)
_.http_method  # lark_oapi BaseRequest (ngb/channels/lark.py)
_.token_types  # lark_oapi BaseRequest
_.tenant_access_token  # lark_oapi RequestOption
_.SeqID  # lark_oapi's protobuf Frame
_.LogID  # lark_oapi's protobuf Frame
_.create_client  # aioimaplib.IMAP4: overridden for a protocol that notes EXISTS (ngb/channels/email_imap.py)
_._client_task  # aioimaplib.IMAP4: awaited by its wait_hello_from_server

_.transcribe_api_key_file  # ngb/config: read by name (loading's secret files, mounts, backup)
_.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb bound (ngb/media/images.py)
_.max_content_length  # Quart's per-request body limit (ngb/web/uploads.py)

# -- for the tests and benchmarks --------------------------------------------------------------------
_.from_config  # onebot, wecom, whatsapp: one channel from a config (tests/test_channel_*.py)
_.listening_port  # ngb/channels/onebot.py: the bound port of reverse mode (tests/test_channel_onebot.py)
_.pongs  # ngb/channels/lark.py: pongs received (tests/test_channel_lark.py)
_.writes  # ngb/channels/dingtalk_conversations.py: files written (tests/test_channel_dingtalk.py)
_.encrypt_message  # ngb/channels/wecom_crypto.py: the platform's side (tests/test_channel_wecom_callback.py)
_.memory_channel  # ngb/aio_bridge.py Portal (tests/test_aio_bridge.py)
_.container_memory_bytes  # ngb/config/settings.py Config (tests/test_config.py)
_.remove_secret  # ngb/logs.py (tests/test_logs.py)
_.integrity_ok  # ngb/store/core.py (tests/faults/test_full_disk.py)
_.failed_turns  # ngb/store/outbox.py (tests/test_core.py, tests/faults/test_turn_faults.py)
_.outbox_items  # ngb/store/outbox.py (tests/test_channel_*.py)
_.wakeups  # ngb/tasks/scheduler.py: loop passes (tests/test_scheduler.py, bench/bench_scheduler.py)

# ngb/channels/email_parse.py _Text: html.parser.HTMLParser calls its handlers by name.
_.handle_starttag
_.handle_endtag
_.handle_data
