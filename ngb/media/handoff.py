"""A batch's files handed to the agent, before its ``input`` frame goes out.

For every attachment of the messages the agent is about to see:
- the file is copied into the group's folder, ``attachments/<id>-<name>``, so the agent reads a PDF
  or a CSV with its own tools at the path the prompt names (written without following any link
  the agent may have planted: ngb/media/folder.py);
- an image is also prepared for the model (ngb/media/images.py), written to
  ``attachments/.model/<id>.<ext>``, and listed for the ``input`` frame, which the runner turns
  into image blocks of the user turn (at most ``images_per_turn``; the rest are named by path);
- a voice note or audio without a transcript is transcribed (ngb/media/transcribe.py) and the
  transcript saved with it, once; with no service set up the prompt says so.
Whatever fails becomes a note for that file; the batch always goes out."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import attrs
import trio

from ..records import Attachment, AttachmentKind, Message
from .files import MediaFiles
from .folder import CONTAINER_ROOT, FolderPathError, write_bytes, write_copy
from .images import ImageProblem, prepare_image
from .limits import MediaLimits
from .sniff import extension_for
from .transcribe import Transcriber, TranscriptionFailed

log = logging.getLogger(__name__)

ATTACHMENTS = "attachments"
MODEL_COPIES = ".model"
SaveTranscript = Callable[[int, str, str], Awaitable[None]]


@attrs.frozen
class PlacedFile:
    """One attachment as the prompt describes it."""

    path: str | None = None  # inside the container
    shown: bool = False  # also handed to the model as an image
    transcript: str | None = None
    transcript_source: str | None = None
    note: str | None = None


@attrs.frozen
class ModelImageFile:
    path: str  # inside the container
    media_type: str


@attrs.frozen
class Placed:
    files: dict[int, PlacedFile] = attrs.field(factory=dict)
    images: tuple[ModelImageFile, ...] = ()


class Handoff:
    def __init__(self, files: MediaFiles, limits: MediaLimits, groups_dir: Path, *, agent_uid: int,
                 save_transcript: SaveTranscript, transcriber: Transcriber | None = None) -> None:
        self.files = files
        self.limits = limits
        self.groups_dir = groups_dir
        self.agent_uid = agent_uid
        self.save_transcript = save_transcript
        self.transcriber = transcriber or Transcriber(limits)

    async def place(self, folder: str, messages: Sequence[Message]) -> Placed:
        placed: dict[int, PlacedFile] = {}
        images: list[ModelImageFile] = []
        for message in messages:
            for att in message.attachments:
                if att.id is None:
                    continue
                try:
                    placed[att.id] = await self._one(folder, att, images)
                except Exception as exc:  # noqa: BLE001 - one file's trouble is a note, never the batch's
                    log.warning("media: handing %s to the agent failed: %r", att.name, exc)
                    placed[att.id] = PlacedFile(note=f"the file could not be placed in your folder ({type(exc).__name__})")
        return Placed(placed, tuple(images))

    async def _one(self, folder: str, att: Attachment, images: list[ModelImageFile]) -> PlacedFile:
        assert att.id is not None
        source = self.files.path(att.sha256)
        if att.gone or not source.is_file():
            return PlacedFile(note="the file is no longer kept (media retention)")
        root = self.groups_dir / folder
        name = f"{att.id}-{att.name}"
        try:
            await trio.to_thread.run_sync(
                lambda: write_copy(root, [ATTACHMENTS], name, source, agent_uid=self.agent_uid))
        except FolderPathError as exc:
            return PlacedFile(note=f"could not be put in your folder: {exc}")
        path = str(CONTAINER_ROOT / ATTACHMENTS / name)
        result = PlacedFile(path=path, transcript=att.transcript, transcript_source=att.transcript_source)
        if att.kind is AttachmentKind.IMAGE:
            return await self._image(root, att, source, result, images)
        if att.kind in (AttachmentKind.VOICE, AttachmentKind.AUDIO) and not att.transcript:
            return await self._transcribe(att, source, result)
        return result

    async def _image(self, root: Path, att: Attachment, source: Path, result: PlacedFile,
                     images: list[ModelImageFile]) -> PlacedFile:
        assert att.id is not None
        if len(images) >= self.limits.images_per_turn:
            return attrs.evolve(result, note=f"not shown as an image: at most {self.limits.images_per_turn} per turn")
        try:
            image = await trio.to_thread.run_sync(prepare_image, source, att.mime)
        except ImageProblem as exc:
            return attrs.evolve(result, note=f"not shown as an image: {exc}")
        name = f"{att.id}.{extension_for(image.media_type)}"
        await trio.to_thread.run_sync(
            lambda: write_bytes(root, [ATTACHMENTS, MODEL_COPIES], name, image.data, agent_uid=self.agent_uid))
        images.append(ModelImageFile(str(CONTAINER_ROOT / ATTACHMENTS / MODEL_COPIES / name), image.media_type))
        return attrs.evolve(result, shown=True)

    async def _transcribe(self, att: Attachment, source: Path, result: PlacedFile) -> PlacedFile:
        assert att.id is not None
        if not self.transcriber.configured:
            return attrs.evolve(result, note="no transcription service is set up; the recording is at the path")
        try:
            text = await self.transcriber.transcribe(source, att.name, att.mime)
        except TranscriptionFailed as exc:
            log.warning("media: transcription of %s failed: %s", att.name, exc)
            return attrs.evolve(result, note=f"not transcribed: {exc}")
        await self.save_transcript(att.id, text, "service")
        return attrs.evolve(result, transcript=text, transcript_source="service")
