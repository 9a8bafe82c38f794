"""Debian's nginx running the configuration docs/deployment.md documents (deploy/nginx/nanogridbot.conf),
on loopback, with a throwaway certificate made by the openssl command, in front of a daemon.

The documented file is used as it is; only its example name's certificate paths, its ports and the
daemon's address are replaced, and each replacement must happen (a changed file fails here loudly
instead of quietly testing something else). No nginx is a failure, not a skip: scripts/test.sh
installs it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.certificates import make_certificate
from tests.channel_helpers import stop_process
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = ROOT / "deploy" / "nginx" / "nanogridbot.conf"


def replace_once(text: str, old: str, new: str) -> str:
    assert old in text, f"{DOCUMENTED.name} no longer has {old!r}: update tests/nginx_proxy.py with the docs"
    return text.replace(old, new)


class Nginx:
    """``nginx`` with the documented server blocks; ``https_port`` serves TLS, ``http_port`` redirects."""

    def __init__(self, daemon_port: int) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise AssertionError("no nginx: scripts/test.sh installs Debian's nginx package")
        # pytest's tmp dirs are 0700 (root's): nginx's workers run as nobody and need a folder they may use
        self.prefix = Path(tempfile.mkdtemp(prefix="ngb-nginx-"))
        self.prefix.chmod(0o755)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / sub).mkdir(mode=0o777)
            (self.prefix / sub).chmod(0o777)
        self.cert, key = make_certificate(self.prefix)
        self.https_port, self.http_port = free_port(), free_port()
        server = DOCUMENTED.read_text()
        for old, new in [
            ("listen 443 ssl http2;", f"listen 127.0.0.1:{self.https_port} ssl http2;"),
            ("listen [::]:443 ssl http2;\n", ""),
            ("listen 80;", f"listen 127.0.0.1:{self.http_port};"),
            ("listen [::]:80;\n", ""),
            ("/etc/letsencrypt/live/ngb.example.org/fullchain.pem", str(self.cert)),
            ("/etc/letsencrypt/live/ngb.example.org/privkey.pem", str(key)),
            ("proxy_pass http://127.0.0.1:8640;", f"proxy_pass http://127.0.0.1:{daemon_port};"),
        ]:
            server = replace_once(server, old, new)
        p = self.prefix
        self.conf = p / "nginx.conf"
        self.conf.write_text(
            f"worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/body;\n"
            f"  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n"
            f"  scgi_temp_path {p}/scgi;\n{server}\n}}\n"
        )
        checked = subprocess.run([binary, "-t", "-p", str(p), "-c", str(self.conf)], capture_output=True, text=True)
        assert checked.returncode == 0, f"nginx -t refused the documented configuration:\n{checked.stderr}"
        self.proc = subprocess.Popen([binary, "-p", str(p), "-c", str(self.conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, f"nginx exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen within 10 s"
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.prefix, ignore_errors=True)
