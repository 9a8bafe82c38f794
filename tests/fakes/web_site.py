"""A small web site for the egress door's tests: HTTP or HTTPS on a loopback address, with a
throwaway certificate authority (made with `cryptography`) whose certificate a test hands to the
daemon as web_extra_ca_file. It answers GET with a page per path and records every request."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import attrs
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@attrs.frozen
class Pki:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def make_pki(address: str) -> Pki:
    """A CA and a server certificate for ``address`` (an IP SAN), valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ngb test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Pki(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


@attrs.define
class WebSite:
    """GET <path> answers ``pages[path]`` (text/html), anything else 404; every request line kept."""

    address: str = "127.0.0.2"
    pages: dict[str, str] = attrs.Factory(dict)
    pki: Pki | None = None  # HTTPS when set
    port: int = 0
    requests: list[str] = attrs.Factory(list)

    @property
    def url(self) -> str:
        return f"{'https' if self.pki else 'http'}://{self.address}:{self.port}"

    def write_ca(self, path: Path) -> Path:
        assert self.pki is not None
        path.write_bytes(self.pki.ca_pem)
        return path

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=self.address)
        self.port = listeners[0].socket.getsockname()[1]
        if self.pki is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tmp = trio.Path(f"/tmp/ngb-site-{self.port}.pem")
            await tmp.write_bytes(self.pki.cert_pem + self.pki.key_pem)
            ctx.load_cert_chain(str(tmp))
            await tmp.unlink()
            listeners = [trio.SSLListener(lst, ctx, https_compatible=True) for lst in listeners]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            data = b""
            with trio.move_on_after(10):
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    data += chunk
            line = data.split(b"\r\n", 1)[0].decode(errors="replace")
            self.requests.append(line)
            parts = line.split(" ")
            path = parts[1] if len(parts) > 2 else "/"
            page = self.pages.get(path)
            status = "200 OK" if page is not None else "404 Not Found"
            body = (page if page is not None else "<html><body>not here</body></html>").encode()
            head = (f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            await stream.send_all(head + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass
        finally:
            with trio.move_on_after(2):
                await stream.aclose()
