"""Client certificates (mTLS) at a real `cloudsignal serve`, with a CA, server and client
certificates made by openssl here: mosquitto_pub/sub and paho-mqtt accepted and mapped to the
right identity and ACL (roles by OU); no certificate, another CA's, an expired one and a
CRL-revoked one refused (the CRL re-read while serving); a certificate's expiry (0xA0) and its
revocation by fingerprint through the API (0x98) close live sessions; a token over a
certificate-verified connection."""

import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import ControlBroker, free_port
from paho_client import V5, Client, eventually
from test_control import token_client

CNF = """
[ca]
default_ca = ca_default
[ca_default]
dir = {dir}
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir/newcerts
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
default_crl_days = 1
crlnumber = $dir/crlnumber
crl_extensions = crl_ext
[crl_ext]
authorityKeyIdentifier = keyid:always
[policy_any]
commonName = supplied
organizationalUnitName = optional
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
"""


class Pki:
    """A CA in a directory, driven by the openssl CLI."""

    def __init__(self, d: Path, name: str):
        self.dir = d / name
        (self.dir / "newcerts").mkdir(parents=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "crlnumber").write_text("1000\n")
        self.cnf = self.dir / "ca.cnf"
        self.cnf.write_text(CNF.format(dir=self.dir))
        self.key, self.cert = self.dir / "ca.key", self.dir / "ca.pem"
        self.run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", self.key, "-out", self.cert, "-days", "3", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.crl = self.dir / "crl.pem"
        self.gencrl()

    def run(self, *args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    def issue(self, name, subject, ext="client_ext", start=None, end=None):
        key, csr, pem = self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.pem"
        self.run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", subject)
        fmt = lambda t: t.strftime("%Y%m%d%H%M%SZ")  # noqa: E731
        now = datetime.now(timezone.utc)
        self.run("ca", "-batch", "-config", self.cnf, "-keyfile", self.key, "-cert", self.cert, "-in", csr,
                 "-out", pem, "-extensions", ext, "-notext",
                 "-startdate", fmt(start or now - timedelta(hours=1)), "-enddate", fmt(end or now + timedelta(days=2)))
        return pem, key

    def revoke(self, pem):
        self.run("ca", "-config", self.cnf, "-keyfile", self.key, "-cert", self.cert, "-revoke", pem)
        self.gencrl()

    def gencrl(self):
        tmp = self.dir / "crl.new"
        self.run("ca", "-config", self.cnf, "-keyfile", self.key, "-cert", self.cert, "-gencrl", "-out", tmp)
        os.replace(tmp, self.crl)


def fingerprint(pem):
    out = subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-fingerprint", "-sha256"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtls")
    ca = Pki(tmp, "ca")
    ca.server = ca.issue("server", "/CN=127.0.0.1", ext="server_ext")
    ca.alice = ca.issue("alice", "/CN=alice/OU=sensors")
    ca.bob = ca.issue("bob", "/CN=bob/OU=sensors")
    ca.carol = ca.issue("carol", "/CN=carol/OU=sensors")
    ca.dave = ca.issue("dave", "/CN=dave/OU=visitors")
    now = datetime.now(timezone.utc)
    ca.expired = ca.issue("expired", "/CN=erin/OU=sensors", start=now - timedelta(days=3), end=now - timedelta(days=1))
    other = Pki(tmp, "other-ca")
    ca.stranger = other.issue("mallory", "/CN=alice/OU=sensors")
    config = tmp / "cloudsignal.toml"
    config.write_text("""
[[auth]]
method = "token"
[[auth]]
method = "api_key"
[[auth]]
method = "mtls"
listeners = ["tls", "wss"]
identity = "{cn}"
roles = [
  { match = "OU=sensors", publish = ["sensors/{user}/#"], subscribe = ["sensors/#", "commands/{user}/#"] },
]
""")
    ca.tls_port, ca.wss_port = free_port(), free_port()
    broker = ControlBroker(tmp, extra=[
        "--config", str(config), "--tls-addr", f"127.0.0.1:{ca.tls_port}", "--wss-addr", f"127.0.0.1:{ca.wss_port}",
        "--tls-cert", str(ca.server[0]), "--tls-key", str(ca.server[1]),
        "--tls-client-ca", str(ca.cert), "--tls-crl", str(ca.crl)])
    ca.broker = broker
    yield ca
    broker.kill()


def tls_client(pki, cert, username=None, token=None):
    """A paho client over TLS with `cert` (or none); no credentials unless given."""
    c = Client(pki.broker, "x", V5, port=pki.tls_port, connect=False, username="unused", token="unused")
    c.c.username_pw_set(username, token)
    if cert:
        c.c.tls_set(ca_certs=str(pki.cert), certfile=str(cert[0]), keyfile=str(cert[1]))
    else:
        c.c.tls_set(ca_certs=str(pki.cert))
    return c


def cert_client(pki, cert):
    """A paho client authenticated by its certificate alone (no username, no password)."""
    return tls_client(pki, cert)


def mosquitto(tool, pki, cert, *args, timeout=30):
    return subprocess.run([tool, "-h", "127.0.0.1", "-p", str(pki.tls_port), "-V", "mqttv5", "--cafile", str(pki.cert),
                           "--cert", str(cert[0]), "--key", str(cert[1]), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_certificates_map_to_identity_and_role_acl(pki):
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(pki.tls_port), "-V", "mqttv5",
                            "--cafile", str(pki.cert), "--cert", str(pki.bob[0]), "--key", str(pki.bob[1]),
                            "-t", "sensors/#", "-C", "1", "-W", "20", "-v"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    out = mosquitto("mosquitto_pub", pki, pki.alice, "-t", "sensors/alice/temp", "-m", "21.5", "-q", "1")
    assert out.returncode == 0, out.stderr
    got, err = sub.communicate(timeout=30)
    assert got.strip() == "sensors/alice/temp 21.5", err
    # the role's ACL: alice may not publish as bob
    alice = cert_client(pki, pki.alice)
    flags, rc = alice.connect()
    assert rc.value == 0
    assert alice.publish("sensors/bob/temp", b"forged").value == 0x87
    assert alice.publish("sensors/alice/temp", b"ok").value == 0
    alice.disconnect()
    logs = pki.broker.logs()
    assert "method=mtls" in logs and f"username=alice@{pki.broker.org}" in logs
    # a certificate no role matches is refused (no default ACL with roles configured)
    dave = cert_client(pki, pki.dave)
    _, rc = dave.connect()
    dave.c.loop_stop()
    assert rc.value == 0x87
    # a username that is not the certificate's identity is refused
    imposter = cert_client(pki, pki.alice)
    imposter.c.username_pw_set(f"bob@{pki.broker.org}", None)
    _, rc = imposter.connect()
    imposter.c.loop_stop()
    assert rc.value == 0x86


def test_no_certificate_another_ca_expired_and_crl_revoked_are_refused(pki):
    # no certificate on an optional listener, no credentials: refused 0x87
    bare = cert_client(pki, None)
    _, rc = bare.connect()
    bare.c.loop_stop()
    assert rc.value == 0x87
    for cert in (pki.stranger, pki.expired):
        out = mosquitto("mosquitto_pub", pki, cert, "-t", "sensors/alice/x", "-m", "x")
        assert out.returncode != 0, out
    # revoked in the CRL while the broker serves: refused once the file is re-read
    assert mosquitto("mosquitto_pub", pki, pki.carol, "-t", "sensors/carol/x", "-m", "before").returncode == 0
    pki.revoke(pki.carol[0])
    assert eventually(lambda: mosquitto("mosquitto_pub", pki, pki.carol, "-t", "sensors/carol/x", "-m", "after").returncode != 0,
                      timeout=20), "the CRL is re-read while serving"
    assert "client CA / CRL files changed: reloaded" in pki.broker.logs()


def test_fingerprint_revocation_closes_the_session(pki):
    bob = cert_client(pki, pki.bob)
    _, rc = bob.connect()
    assert rc.value == 0
    status, body, _ = pki.broker.api("POST", f"/v1/certificates/{fingerprint(pki.bob[0])}/revoke")
    assert status == 200, body
    assert bob.disconnects.get(timeout=10).value == 0x98
    again = cert_client(pki, pki.bob)
    _, rc = again.connect()
    again.c.loop_stop()
    assert rc.value == 0x86
    assert pki.broker.api("POST", "/v1/certificates/not-a-hash/revoke")[0] == 400


def test_a_certificate_expiring_closes_its_session_0xa0(pki):
    soon = pki.issue("brief", "/CN=frank/OU=sensors", end=datetime.now(timezone.utc) + timedelta(seconds=6))
    c = cert_client(pki, soon)
    why = []
    c.c.on_disconnect = lambda cl, u, flags, rc, props: (why.append(getattr(props, "ReasonString", None)),
                                                          c.disconnects.put(rc))
    _, rc = c.connect()
    assert rc.value == 0
    assert c.disconnects.get(timeout=30).value == 0xA0
    assert why == ["client certificate expired"], "the client reads why"


def test_a_token_over_a_verified_certificate(pki):
    # certificate and token together: the token decides who it is
    _, body, _ = pki.broker.api("POST", "/v1/tokens", {"user": "grace"})
    creds = body["mqtt_credentials"]
    c = tls_client(pki, pki.alice, username=creds["username"], token=creds["password"])
    _, rc = c.connect()
    assert rc.value == 0
    assert c.publish("users/grace/x", b"token acl").value == 0
    c.disconnect()


def test_the_wss_listener_takes_certificates_too(pki):
    c = Client(pki.broker, "x", V5, port=pki.wss_port, connect=False, username="unused", token="unused",
               transport="websockets")
    c.c.username_pw_set(None, None)
    c.c.ws_set_options(path="/mqtt")
    c.c.tls_set(ca_certs=str(pki.cert), certfile=str(pki.alice[0]), keyfile=str(pki.alice[1]))
    _, rc = c.connect()
    assert rc.value == 0
    assert c.publish("sensors/alice/ws", b"over wss").value == 0
    c.disconnect()
    assert "listener=wss" in pki.broker.logs()
