"""A local fake of an OpenAI-compatible transcription endpoint: ``POST /v1/audio/transcriptions``
with multipart ``file`` and ``model`` (and a bearer key), answering ``{"text": ...}`` as OpenAI's
and Groq's APIs do. Every call is recorded (model, file name, bytes, Authorization)."""

from __future__ import annotations

from typing import Any

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import request
from quart_trio import QuartTrio


@attrs.define
class Call:
    model: str
    filename: str
    data: bytes
    authorization: str | None


@attrs.define
class FakeTranscription:
    text: str = "remind me to buy oat milk"
    status: int = 200
    calls: list[Call] = attrs.field(factory=list)
    url: str = ""

    def app(self) -> QuartTrio:
        app = QuartTrio(__name__)

        @app.post("/v1/audio/transcriptions")
        async def transcribe() -> Any:
            form = await request.form
            f = (await request.files).get("file")
            if f is None or not form.get("model"):
                return {"error": {"message": "file and model are required"}}, 400
            self.calls.append(Call(form["model"], f.filename or "", f.read(), request.headers.get("Authorization")))
            if self.status != 200:
                return {"error": {"message": "unavailable"}}, self.status
            return {"text": self.text}

        return app

    async def serve(self, *, task_status: trio.TaskStatus[FakeTranscription] = trio.TASK_STATUS_IGNORED) -> None:
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        app = self.app()

        async def started(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
            await serve(app, config, task_status=task_status)  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            binds = await nursery.start(started)
            self.url = f"{binds[0].rstrip('/')}/v1"
            task_status.started(self)
