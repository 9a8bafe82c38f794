"""WeCom's callback message encryption (企业微信 "加解密方案", the algorithm of its WXBizMsgCrypt
samples), for the callback mode of the WeCom channel (ngb/channels/wecom_callback.py).

- **Signature**: ``msg_signature = sha1(''.join(sorted([token, timestamp, nonce, encrypt])))`` in
  hex, where ``encrypt`` is the base64 ciphertext (the ``echostr`` of a URL check, the ``<Encrypt>``
  of a message).
- **Key**: ``AESKey = base64decode(EncodingAESKey + "=")``: 43 characters -> 32 bytes (AES-256).
- **Cipher**: AES-256-CBC, IV = the first 16 bytes of the key, PKCS#7 padding to a multiple of 32
  bytes (pad bytes 1..32), base64.
- **Plaintext**: ``random(16) + len(msg) as 4 bytes big-endian + msg + receiveid``; the receiveid is
  the corp id for a self-built app's callbacks and must match ours.

AES from pycryptodome (``Crypto``), which lark-oapi already requires. Every failure is a
``CallbackRefused`` with a short reason and the HTTP status to answer (403: not from WeCom or not
for us; 400: malformed); no secret ever appears in its text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import time
from xml.etree import ElementTree

BLOCK = 32  # WeCom pads to 32 bytes (not AES's 16)
_KEY_RE = re.compile(r"[A-Za-z0-9]{43}")


class CallbackRefused(Exception):
    """A callback that must not be processed: ``status`` (400/403) and a log-safe ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key from the 43-character EncodingAESKey; ValueError (without the key)
    when it is not one."""
    text = encoding_aes_key.strip()
    if not _KEY_RE.fullmatch(text):
        raise ValueError(f"must be the 43 letters and digits WeCom shows (got {len(text)} characters)")
    try:
        key = base64.b64decode(text + "=", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    if len(key) != 32:
        raise ValueError("does not decode to 32 bytes")
    return key


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode("utf-8")).hexdigest()


def parse_xml(data: bytes | str) -> ElementTree.Element:
    """A small XML document (WeCom's <xml>...</xml>); DTDs and entities refused (no entity
    expansion games from an unauthenticated body)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if b"<!DOCTYPE" in raw.upper() or b"<!ENTITY" in raw.upper():
        raise CallbackRefused(400, "XML with a DTD or entities")
    try:
        return ElementTree.fromstring(raw)
    except ElementTree.ParseError:
        raise CallbackRefused(400, "malformed XML") from None


class WeComCrypto:
    """Signs, encrypts and decrypts for one app: its callback Token, EncodingAESKey and receiveid."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        self.token = token
        self.key = decode_aes_key(encoding_aes_key)
        self.receive_id = receive_id

    def __repr__(self) -> str:
        return f"WeComCrypto(receive_id={self.receive_id!r})"

    # -- primitives ------------------------------------------------------------------------------
    def sign(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return signature(self.token, timestamp, nonce, encrypted)

    def check_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> None:
        expected = self.sign(timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected.encode(), msg_signature.strip().lower().encode()):
            raise CallbackRefused(403, "bad signature")

    def encrypt(self, message: str, *, receive_id: str | None = None, prefix: bytes | None = None) -> str:
        """Base64 ciphertext of ``message`` (``receive_id``: ours unless given; ``prefix``: the 16
        random bytes, for known-answer tests)."""
        from Crypto.Cipher import AES

        body = message.encode("utf-8")
        rid = (self.receive_id if receive_id is None else receive_id).encode("utf-8")
        prefix = os.urandom(16) if prefix is None else prefix
        if len(prefix) != 16:
            raise ValueError("the random prefix is 16 bytes")
        plain = prefix + struct.pack(">I", len(body)) + body + rid
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        cipher = AES.new(self.key, AES.MODE_CBC, self.key[:16])
        return base64.b64encode(cipher.encrypt(plain)).decode("ascii")

    def decrypt(self, encrypted: str) -> str:
        """The message inside a ciphertext, after checking its padding, length and receiveid."""
        from Crypto.Cipher import AES

        try:
            raw = base64.b64decode(encrypted.replace(" ", "+"), validate=True)  # "+" lost to form decoding
        except (binascii.Error, ValueError):
            raise CallbackRefused(400, "ciphertext is not base64") from None
        if not raw or len(raw) % 16:
            raise CallbackRefused(400, "ciphertext is not whole AES blocks")
        plain = AES.new(self.key, AES.MODE_CBC, self.key[:16]).decrypt(raw)
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or pad > len(plain) or plain[-pad:] != bytes([pad]) * pad:
            raise CallbackRefused(400, "bad padding (wrong EncodingAESKey?)")
        plain = plain[:-pad]
        if len(plain) < 20:
            raise CallbackRefused(400, "plaintext too short")
        (length,) = struct.unpack(">I", plain[16:20])
        if 20 + length > len(plain):
            raise CallbackRefused(400, "bad message length")
        received_for = plain[20 + length:]
        if not hmac.compare_digest(received_for, self.receive_id.encode("utf-8")):
            raise CallbackRefused(403, "wrong corp id (receiveid)")
        try:
            return plain[20:20 + length].decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackRefused(400, "message is not UTF-8") from None

    # -- the two callbacks -------------------------------------------------------------------------
    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """The URL check (GET): the plaintext echostr to answer."""
        echostr = echostr.replace(" ", "+")
        self.check_signature(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)

    def decrypt_message(self, msg_signature: str, timestamp: str, nonce: str, body: bytes | str) -> str:
        """A message callback (POST): the inner XML, from the outer ``<xml><Encrypt>..``."""
        encrypted = (parse_xml(body).findtext("Encrypt") or "").strip()
        if not encrypted:
            raise CallbackRefused(400, "no <Encrypt> in the body")
        self.check_signature(msg_signature, timestamp, nonce, encrypted)
        return self.decrypt(encrypted)

    def encrypt_message(self, message: str, nonce: str, timestamp: str | None = None, *,
                        receive_id: str | None = None, to_user: str | None = None, agent_id: str = "") -> tuple[str, str, bytes]:
        """What WeCom posts for ``message``: (msg_signature, timestamp, outer XML body). The same
        format answers a callback with an encrypted passive reply."""
        timestamp = timestamp or str(int(time.time()))
        encrypted = self.encrypt(message, receive_id=receive_id)
        outer = (f"<xml><ToUserName><![CDATA[{to_user or self.receive_id}]]></ToUserName>"
                 f"<Encrypt><![CDATA[{encrypted}]]></Encrypt>"
                 f"<AgentID><![CDATA[{agent_id}]]></AgentID></xml>")
        return self.sign(timestamp, nonce, encrypted), timestamp, outer.encode("utf-8")
