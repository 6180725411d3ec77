"""The auth webhook, against a real HTTP server started here that checks every request's
HMAC-SHA256 signature: allow, deny, malformed answers, 500, timeouts and an endpoint that is
down (fail closed, token clients unaffected), the decision cache, a burst of 1,000 CONNECTs
served with a bounded number of calls, and the chain order honoured.

Clients are paho-mqtt and raw MQTT CONNECTs over sockets."""

import hashlib
import hmac
import json
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ControlBroker, free_port
from paho_client import V5, Client
from test_control import token_client

SECRET = "webhook-secret-for-tests-0123456789"
ORG = "org_webhookorgab"


class Endpoint:
    """The operator's webhook: decides by username, counts calls, checks signatures."""

    def __init__(self):
        self.calls = {}
        self.bad_signatures = 0
        self.bodies = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                ts = self.headers.get("x-cloudsignal-timestamp", "")
                sig = self.headers.get("x-cloudsignal-signature", "")
                want = "v1=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
                fresh = ts.isdigit() and abs(time.time() - int(ts)) < 300
                if not (hmac.compare_digest(sig, want) and fresh):
                    endpoint.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                req = json.loads(body)
                endpoint.bodies.append(req)
                user = req["username"]
                endpoint.calls[user] = endpoint.calls.get(user, 0) + 1
                kind = user.split("-")[0]
                if kind == "slow":
                    time.sleep(3)
                if kind == "fail500":
                    self.send_response(500)
                    self.end_headers()
                    return
                answer = {
                    "allow": {"result": "allow", "ttl": 300},
                    "admin": {"result": "allow", "user": "ops", "acl": {"pub": ["#"], "sub": ["#"]}},
                    "deny": {"result": "deny"},
                    "malformed": {"result": "perhaps"},
                    "slow": {"result": "allow"},
                }.get(kind, {"result": "deny"})
                out = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mqtt-auth"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def hook(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webhook")
    secret = tmp / "webhook.secret"
    secret.write_text(SECRET)
    endpoint = Endpoint()
    broker = ControlBroker(tmp, extra=["--webhook-url", endpoint.url, "--webhook-secret-file", str(secret),
                                       "--webhook-org", ORG, "--webhook-timeout-ms", "1000"])
    yield broker, endpoint
    broker.kill()
    endpoint.close()


def connect(broker, username, password, client_id=None, port=None):
    c = Client(broker, username, V5, username=username, token=password, client_id=client_id, connect=False, port=port)
    _, rc = c.connect()
    if rc.value != 0:
        c.c.loop_stop()
    return c, rc.value


def test_allow_deny_and_the_signed_request(hook):
    broker, endpoint = hook
    c, rc = connect(broker, "allow-alice", "correct horse", client_id="wh-1")
    assert rc == 0
    # the endpoint's user and the default ACL users/{user}/#, in the webhook's org
    assert c.subscribe("users/allow-alice/#")[0].value == 1
    assert c.publish("users/allow-alice/x", b"hi").value == 0
    assert c.expect()[0].payload == b"hi"
    assert c.publish("users/bob/x", b"no").value == 0x87
    c.disconnect()
    ops, rc = connect(broker, "admin-x", "pw")
    assert rc == 0 and ops.subscribe("anything/#")[0].value == 1, "the endpoint's ACL applies"
    ops.disconnect()
    _, rc = connect(broker, "deny-mallory", "guess")
    assert rc == 0x86
    assert endpoint.bad_signatures == 0
    body = next(b for b in endpoint.bodies if b["username"] == "allow-alice")
    assert body == {"username": "allow-alice", "password": "correct horse", "client_id": "wh-1",
                    "peer": body["peer"], "listener": "tcp", "certificate_subject": None}
    assert body["peer"].startswith("127.0.0.1:")
    logs = broker.logs()
    assert "method=\"webhook\"" in logs or "method=webhook" in logs
    assert "correct horse" not in logs, "passwords are never logged"


def test_decisions_are_cached_and_a_burst_shares_calls(hook):
    broker, endpoint = hook
    for _ in range(3):
        c, rc = connect(broker, "allow-cached", "pw")
        assert rc == 0
        c.disconnect()
    assert endpoint.calls["allow-cached"] == 1, "an allow is cached for its ttl"
    for _ in range(3):
        assert connect(broker, "deny-cached", "pw")[1] == 0x86
    assert endpoint.calls["deny-cached"] == 1, "a denial is cached briefly"

    # 1,000 CONNECTs at once with one credential: one call (concurrent misses share it)
    def raw_connect(i):
        return raw_mqtt_connect(broker.port, f"burst-{i}", "allow-burst", "pw")
    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(raw_connect, range(1000)))
    assert codes.count(0) == 1000, {c: codes.count(c) for c in set(codes)}
    assert endpoint.calls["allow-burst"] <= 2, endpoint.calls["allow-burst"]


def raw_mqtt_connect(port, client_id, username, password):
    """One MQTT 3.1.1 CONNECT; returns the CONNACK return code."""
    def s(x):
        b = x.encode()
        return struct.pack("!H", len(b)) + b
    var = s("MQTT") + bytes([4, 0b11000010]) + struct.pack("!H", 30)
    payload = s(client_id) + s(username) + s(password)
    body = var + payload
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        ack = b""
        while len(ack) < 4:
            chunk = sock.recv(4 - len(ack))
            if not chunk:
                return -1
            ack += chunk
        sock.sendall(b"\xe0\x00")
        return ack[3]


def test_failures_fail_closed_and_are_not_cached(hook):
    broker, endpoint = hook
    for user in ("malformed-1", "fail500-1", "slow-1"):
        started = time.monotonic()
        _, rc = connect(broker, user, "pw")
        assert rc == 0x88, (user, rc)
        assert time.monotonic() - started < 5, "a slow endpoint costs at most its timeout"
        # not cached: asked again
        _, rc = connect(broker, user, "pw")
        assert rc == 0x88
    assert endpoint.calls["malformed-1"] == 2 and endpoint.calls["fail500-1"] == 2
    assert "fail closed" in broker.logs()
    # five failures in a row opened the breaker: the endpoint is left alone for a while
    assert "circuit breaker open" in broker.logs()


def test_an_endpoint_that_is_down_refuses_only_its_own_clients(tmp_path):
    secret = tmp_path / "webhook.secret"
    secret.write_text(SECRET)
    broker = ControlBroker(tmp_path, extra=["--webhook-url", f"http://127.0.0.1:{free_port()}/down",
                                            "--webhook-secret-file", str(secret), "--webhook-org", ORG])
    try:
        for _ in range(7):  # past the breaker's threshold
            assert connect(broker, "allow-x", "pw")[1] == 0x88
        started = time.monotonic()
        assert connect(broker, "allow-x", "pw")[1] == 0x88
        # a refused connection fails fast anyway; the bound is the refusal delays (<= 1.1 s here)
        assert time.monotonic() - started < 4, "no wait on a dead endpoint"
        # another method of the chain is unaffected
        alice, _ = token_client(broker, "alice")
        assert alice.publish("users/alice/x", b"fine").value == 0
        alice.disconnect()
        assert "circuit breaker open" in broker.logs()
    finally:
        broker.kill()


def test_the_chain_order_is_the_config_files(tmp_path):
    endpoint = Endpoint()
    secret = tmp_path / "webhook.secret"
    secret.write_text(SECRET)
    config = tmp_path / "cloudsignal.toml"
    config.write_text(f'''
[[auth]]
method = "webhook"
url = "{endpoint.url}"
secret_file = "{secret}"
org = "{ORG}"

[[auth]]
method = "token"
''')
    broker = ControlBroker(tmp_path, extra=["--config", str(config)])
    try:
        # the webhook comes first: it decides the token user's CONNECT (and denies it)
        c, _ = token_client(broker, "alice", connect=False)
        _, rc = c.connect()
        c.c.loop_stop()
        assert rc.value == 0x86
        assert any(b["username"].startswith("alice@") for b in endpoint.bodies), "the webhook was asked first"
        # API keys are not in this chain at all
        status, body, _ = broker.api("POST", "/v1/keys", {"kind": "sk", "name": "svc"})
        k, rc = connect(broker, body["mqtt_username"], body["key"])
        assert rc == 0x86
        assert 'authenticator chain order=webhook → token\n' in broker.logs()
    finally:
        broker.kill()
        endpoint.close()
