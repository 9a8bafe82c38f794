"""Matrix password login against the real Synapse: the first start logs in once and keeps the token
and device (``<state>/secrets/matrix/login.json``, 0600); later starts use it with the password gone
from the configuration; a stored login the homeserver revoked is replaced by a new login when the
password is there; a wrong password leaves the channel unauthorized with a line that says why, and
the password is in no log line."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import httpx
import trio

from ngb.aio_bridge import AsyncioBridge
from ngb.ops.matrix_check import probe_matrix
from ngb.records import Group
from tests.channel_helpers import StoppableDaemon
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour
from tests.matrix_server import MatrixServer, MatrixUser, synapse  # noqa: F401 - the session fixture
from tests.test_channel_matrix import bridge, from_bot, person, room_with_bot  # noqa: F401 - the fixture


def password_env(server: MatrixServer, bot: MatrixUser, inviter: str, password: str | None) -> dict[str, str]:
    settings = {"homeserver": server.base_url, "user_id": bot.user_id, "invites_from": [inviter], "sync_timeout": "1",
                "reconnect_base": "0.05", "reconnect_cap": "0.3", "device_name": "ngb test"}
    env = {"NGB_CHANNELS": json.dumps({"matrix": settings})}
    if password is not None:
        env["NGB_MATRIX_PASSWORD"] = password
    return env


async def test_a_password_login_is_done_once_and_kept(tmp_path: Path, bridge: AsyncioBridge,  # noqa: F811
                                                      synapse: MatrixServer, caplog: Any) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    bot = synapse.register("bot")
    alice = await person(bridge, synapse, "alice")
    env = password_env(synapse, bot, alice.user.user_id, bot.password)
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **env), FakeBehaviour(), "matrix")
        first_device = d.channel.device
        assert first_device and first_device != bot.device_id  # a device of its own, not the admin API's
        kept = tmp_path / "state" / "secrets" / "matrix" / "login.json"
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        login = json.loads(kept.read_text())
        assert (login["user_id"], login["device_id"]) == (bot.user_id, first_device)
        room = await room_with_bot(alice, bot, d.channel)
        await d.daemon.registry.add(Group(chat=f"matrix:{room}", folder="alice"))
        await alice.say(room, "hello by password")
        await alice.wait_for(lambda e: from_bot(bot)(e) and e["content"]["body"] == "Echo: hello by password")
        await d.stop()

        # the password leaves the configuration: the kept login goes on, same device
        config = make_config(tmp_path, **password_env(synapse, bot, alice.user.user_id, None))
        check = await trio.to_thread.run_sync(lambda: probe_matrix(config, d.channel.settings, httpx.Client(timeout=10)))
        assert check.status == "ok" and first_device in check.detail, check
        d = await StoppableDaemon.start_with(nursery, config, FakeBehaviour(), "matrix")
        assert d.channel.device == first_device
        await alice.say(room, "and without it")
        await alice.wait_for(lambda e: from_bot(bot)(e) and e["content"]["body"] == "Echo: and without it")
        await d.stop()

        # the homeserver forgets the login (logged out elsewhere): with the password, a new login
        async with httpx.AsyncClient(timeout=10) as http:
            (await http.post(f"{synapse.base_url}/_matrix/client/v3/logout", json={},
                             headers={"Authorization": f"Bearer {login['access_token']}"})).raise_for_status()
        d = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **env), FakeBehaviour(), "matrix")
        assert d.channel.device not in ("", first_device)
        assert json.loads(kept.read_text())["device_id"] == d.channel.device
        await alice.say(room, "after the logout")
        await alice.wait_for(lambda e: from_bot(bot)(e) and e["content"]["body"] == "Echo: after the logout")
        await d.stop()
    await alice.close()
    secrets = (bot.password, login["access_token"])
    leaked = [r.getMessage() for r in caplog.records if any(s in r.getMessage() for s in secrets)]
    assert leaked == []


async def test_a_wrong_password_is_refused_with_one_clear_state(tmp_path: Path, synapse: MatrixServer) -> None:  # noqa: F811
    bot = synapse.register("bot")
    env = password_env(synapse, bot, "@alice:localhost", "not-the-password")
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **env), FakeBehaviour(), "matrix",
                                             state="unauthorized")
        described = d.channel.describe()
        assert "M_FORBIDDEN" in str(described), described
        assert "not-the-password" not in str(described)
        assert not (tmp_path / "state" / "secrets" / "matrix" / "login.json").exists()
        await d.stop()
