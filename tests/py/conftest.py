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
            [BIN, "serve", "--mqtt-addr", f"127.0.0.1:{self.port}", "--ws-addr", "off",
             "--issuer", ISSUER, "--issuer-jwks", str(jwks), "--auth-failure-delay-ms", "100"],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "CLOUDSIGNAL_LOG": "info"},
        )
        deadline = time.monotonic() + 15
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
