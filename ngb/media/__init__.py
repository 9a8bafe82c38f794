"""Media: the files messages carry, in and out.

- ``files.py``    the content-addressed store of the bytes (state/media/, 0600, never executable)
- ``sniff.py``    what a file is, from its first bytes (never from its name)
- ``names.py``    a file name safe to show and to write into a group's folder
- ``limits.py``   the limits and settings (ngb/config fills them)
- ``intake.py``   a platform's file -> a stored ``Attachment``, or the note that replaces it
- ``images.py``   an image as the model takes it (resized, first frame, converted)
- ``transcribe.py`` voice -> text through an OpenAI-compatible transcription endpoint
- ``handoff.py``  a batch's files into the group's folder, its images and transcripts for the turn
- ``outgoing.py`` a file the agent names in its folder -> a stored attachment to send
- ``retention.py`` old files removed, the quota kept
"""
