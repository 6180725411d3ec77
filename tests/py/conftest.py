"""Fixtures for the Python suites: a real `cloudsignal serve` on loopback with a fresh issuer key.

The broker binary comes from $CLOUDSIGNAL_BIN (set by `cargo xtask test`; default
target/debug/cloudsignal). Tokens are minted with `cloudsignal token issue`, the same path a
backend without the control plane uses.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("CLOUDSIGNAL_BIN", str(ROOT / "target" / "debug" / "cloudsignal"))
ISSUER = "https://issuer.test"
# `postgres`: every control plane these suites start uses a fresh PostgreSQL database (a
# throwaway cluster, see pg.py) instead of its data directory's SQLite file
STORE = os.environ.get("CLOUDSIGNAL_TEST_STORE", "sqlite")
_pg = None
_databases = {}


def postgres():
    """The session's throwaway PostgreSQL cluster (started on first use)."""
    global _pg
    if _pg is None:
        from pg import Postgres
        _pg = Postgres()
    return _pg


def database_url(data_dir: Path) -> str:
    """The PostgreSQL database of `data_dir` (one per data directory, so a restart finds its
    store again)."""
    postgres()
    key = str(data_dir)
    if key not in _databases:
        _databases[key] = _pg.create_db()
    return _databases[key]


def pytest_sessionfinish(session, exitstatus):
    if _pg is not None:
        _pg.stop()


def pytest_report_header(config):
    return f"control-plane store: {STORE}"
ORG = "org_k7xm4pqr2n5t"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.key = tmp / "issuer.jwk"
        subprocess.run([BIN, "keygen", "--kid", "py-1", "--out", str(self.key)], check=True, capture_output=True)
        jwks = tmp / "jwks.json"
        jwks.write_text(subprocess.run([BIN, "jwks", str(self.key)], check=True, capture_output=True, text=True).stdout)
        self.port = free_port()
        self.log = open(tmp / "broker.log", "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--mqtt-addr", f"127.0.0.1:{self.port}", "--ws-addr", "off", "--control-addr", "off",
             "--issuer", ISSUER, "--issuer-jwks", str(jwks), "--auth-failure-delay-ms", "100"],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "CLOUDSIGNAL_LOG": "info"},
        )
        deadline = time.monotonic() + 60  # a loaded CI machine is slow, never wrong
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("broker did not start: " + (tmp / "broker.log").read_text())

    def token(self, user: str, pub=("users/{user}/#",), sub=("users/{user}/#",), ttl=600) -> str:
        args = [BIN, "token", "issue", "--key", str(self.key), "--issuer", ISSUER,
                "--user", user, "--org", ORG, "--ttl", str(ttl)]
        for f in pub:
            args += ["--pub", f]
        for f in sub:
            args += ["--sub", f]
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()

    def username(self, user: str) -> str:
        return f"{user}@{ORG}"

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / "broker.log").read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


class ControlBroker:
    """`cloudsignal serve` with its control plane on loopback and its own data directory."""

    def __init__(self, tmp: Path, data_dir: Path = None, extra=(), max_failures=1000, delay_ms=100,
                 database=None):
        self.tmp = tmp
        self.delay_ms = delay_ms
        self.extra = list(extra)
        self.max_failures = max_failures
        self.data = data_dir or (tmp / "data")
        if database is not None:
            _databases[str(self.data)] = database
        if database is not None or STORE == "postgres":
            self.extra = ["--database-url", database_url(self.data), *self.extra]
        self.port = free_port()
        self.api_port = free_port()
        self.start()

    def start(self):
        self.log = open(self.tmp / f"broker-{self.port}.log", "a")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--mqtt-addr", f"127.0.0.1:{self.port}", "--ws-addr", "off",
             "--control-addr", f"127.0.0.1:{self.api_port}", "--data-dir", str(self.data),
             "--auth-failure-delay-ms", str(self.delay_ms),
             # these suites refuse clients on purpose, all from 127.0.0.1: do not ban it
             "--max-auth-failures", str(self.max_failures), "--max-refusal-delay-ms", "1000", *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "CLOUDSIGNAL_LOG": "info"},
        )
        deadline = time.monotonic() + 60  # a loaded CI machine is slow, never wrong
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.api_port), timeout=0.2).close()
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                self.admin = (self.data / "admin.key").read_text().strip()
                self.org = self.api("POST", "/v1/tokens", {"user": "probe"})[1]["mqtt_credentials"]["username"].split("@")[1]
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("broker did not start: " + self.logs())

    def sql(self, statement):
        """Runs `statement` on this broker's store (SQLite file or PostgreSQL database); its
        rows as tuples of text."""
        if STORE == "postgres" or str(self.data) in _databases:
            out = _pg.sql(database_url(self.data), statement)
            assert out.returncode == 0, out.stderr
            return [tuple(line.split("|")) for line in out.stdout.splitlines() if line]
        import sqlite3
        with sqlite3.connect(self.data / "cloudsignal.db") as db:
            return [tuple(str(v) for v in row) for row in db.execute(statement)]

    def offline_env(self):
        """The environment for offline commands on this broker's store (`cloudsignal admin …
        --data-dir`): with PostgreSQL, its database URL."""
        env = dict(os.environ)
        if STORE == "postgres" or str(self.data) in _databases:
            env["CLOUDSIGNAL_DATABASE_URL"] = database_url(self.data)
        return env

    def api(self, method, path, body=None, key=None, raw=None):
        """Calls the control plane; returns (status, parsed JSON body, headers)."""
        import json
        import urllib.error
        import urllib.request
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {key or self.admin}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null"), {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, json.loads(text) if text else None, {k.lower(): v for k, v in e.headers.items()}

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / f"broker-{self.port}.log").read_text()

    def kill(self, sig=None):
        import signal
        self.proc.send_signal(sig or signal.SIGTERM)
        self.proc.wait(10)
        self.log.close()

    def restart(self):
        self.kill()
        self.start()


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    b = ControlBroker(tmp_path_factory.mktemp("control"))
    yield b
    if b.proc.poll() is None:
        b.kill()
