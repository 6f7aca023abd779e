"""A real redis-server for tests: on a free port of 127.0.0.1, in a temp dir, no persistence.

    with RedisServer(tmp_path) as server:
        server.url          # redis://127.0.0.1:<port>/0 (with the password when one is set)
        server.stop()       # the server goes away (connections are refused) ...
        server.start()      # ... and comes back on the same port, empty (nothing is saved)
        server.stop(save=True); server.start()   # ... or with what it held

    RedisServer(tmp_path, tls=True)   # TLS only (rediss://), with a self-signed certificate
                                      # made by openssl and named in the URL as its CA

The `redis_server` fixture gives one per test and stops it at the end; it skips with the
reason when Debian's redis-server is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

BINARY = "redis-server"
_START_TIMEOUT = 10.0  # seconds; it answers PING within ~10 ms here


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process; `start` and `stop` may be called again (same port)."""

    def __init__(self, directory: Path, *, password: str | None = None,
                 tls: bool = False) -> None:
        self.directory = directory
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.certificate}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def certificate(self) -> Path:
        return self.directory / "cert.pem"

    def start(self) -> None:
        if self.process is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        listen = ["--port", str(self.port)]
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), *self._certificates()]
        command = [BINARY, *listen, "--bind", "127.0.0.1",
                   "--dir", str(self.directory), "--save", "", "--appendonly", "no",
                   "--daemonize", "no", "--loglevel", "warning",
                   "--logfile", str(self.directory / "redis.log")]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self._wait_ready()

    def stop(self, *, save: bool = False) -> None:
        """Stop the server; `save` keeps its data for the next start (SHUTDOWN SAVE writes
        dump.rdb in its folder, which a start reads back), like a Redis restarted for
        maintenance. Without it the next start is empty."""
        process, self.process = self.process, None
        if process is None:
            return
        if save:
            import redis

            with contextlib.suppress(redis.ConnectionError):  # it goes away as it answers
                redis.Redis.from_url(self.url).shutdown(save=True)
        else:
            (self.directory / "dump.rdb").unlink(missing_ok=True)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def client(self) -> object:
        """A plain redis client (bytes in, bytes out) for looking at what a test stored."""
        import redis

        return redis.Redis.from_url(self.url)

    def _certificates(self) -> list[str]:
        """redis-server's TLS options, with a self-signed certificate for 127.0.0.1."""
        key = self.directory / "key.pem"
        if not self.certificate.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", str(key), "-out", str(self.certificate), "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, capture_output=True, timeout=60)
        return ["--tls-cert-file", str(self.certificate), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(self.certificate), "--tls-auth-clients", "no"]

    def _connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        if not self.tls:
            return conn
        context = ssl.create_default_context(cafile=str(self.certificate))
        return context.wrap_socket(conn, server_hostname="127.0.0.1")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                log = self.directory / "redis.log"
                raise RuntimeError(f"redis-server exited ({self.process.returncode}): "
                                   f"{log.read_text() if log.exists() else ''}")
            try:
                with self._connect() as conn:
                    conn.sendall(b"PING\r\n")
                    reply = conn.recv(64)
                    if reply.startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} "
                           f"within {_START_TIMEOUT:.0f} s")

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def require_redis(*, tls: bool = False) -> None:
    if shutil.which(BINARY) is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    if tls and shutil.which("openssl") is None:
        pytest.skip("openssl is not installed, to make the TLS test's certificate")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require_redis()
    with RedisServer(tmp_path / "redis") as server:
        yield server
