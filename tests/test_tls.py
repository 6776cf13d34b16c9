"""rediss:// through the URL: a worker and a client talk TLS (certificate verified).

Debian's redis-server is built without TLS, so the test puts a TLS terminator of
its own (stdlib ssl) in front of the suite's real redis-server, as stunnel or a
cloud Redis endpoint would be. Everything asyncq sends crosses a real TLS session.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from asyncq import Celery


class TlsTerminator:
    """Accepts TLS on a loopback port and relays plain bytes to ``target_port``."""

    def __init__(self, cert: Path, key: Path, target_port: int):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sessions = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            secure = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        self.sessions += 1
        plain = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=_pump, args=(plain, secure), daemon=True).start()
        _pump(secure, plain)

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.close()


@pytest.fixture
def tls_url(tmp_path: Path, redis_server) -> Iterator[str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    terminator = TlsTerminator(cert, key, redis_server.port)
    yield f"rediss://127.0.0.1:{terminator.port}/0?ssl_ca_certs={cert}"
    terminator.close()


def test_worker_and_client_work_over_rediss(redis_url, tls_url, start_worker):
    # Given a worker whose broker URL is rediss://, with the CA to verify the server
    start_worker(env={"ASYNCQ_BROKER_URL": tls_url})
    app = Celery("tls-client", broker=tls_url)
    add = app.task(name="tests.add")(lambda a, b: a + b)
    # When a task is submitted over TLS, then it runs and its result comes back
    assert add.delay(20, 22).get(timeout=15) == 42
    # And the TLS port really speaks only TLS
    port = int(tls_url.split(":")[2].split("/")[0])
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2).ping()


def test_an_unverifiable_certificate_is_refused(tls_url):
    # Given a rediss:// URL without the CA that signed the server's certificate
    url = tls_url.split("?")[0]
    # Then connecting fails clearly rather than talking to an unverified server
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
