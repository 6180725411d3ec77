"""The control plane end to end: a backend issues tokens and manages API keys over HTTP, real
MQTT clients (paho-mqtt, mosquitto_pub) use them at the same `cloudsignal serve`, and
revocations close live sessions (0x98), refuse reconnects and survive a restart."""

import os
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import BIN, STORE, ControlBroker
from paho_client import TIMEOUT, V311, V5, Client, eventually


def token_client(control, user, protocol=V5, **kw):
    status, body, _ = control.api("POST", "/v1/tokens", {"user": user, "ttl": 600})
    assert status == 200, body
    creds = body["mqtt_credentials"]
    return Client(control, user, protocol, username=creds["username"], token=creds["password"], **kw), body


def key_client(control, k, protocol=V5, **kw):
    """An MQTT client authenticated by API key `k` (a create or rotate response): a key is
    one identity, so the username is always the key's own `mqtt_username`."""
    username = k.get("mqtt_username") or f"{k['name']}@{control.org}"
    return Client(control, k["name"], protocol, username=username, token=k["key"], **kw)


_names = iter(range(1_000_000))


def new_key(control, kind, scopes=(), key=None, name=None, **extra):
    name = name or f"test-{kind}-{next(_names)}-{os.getpid()}"
    status, body, _ = control.api("POST", "/v1/keys", {"kind": kind, "name": name, "scopes": list(scopes), **extra}, key=key)
    assert status == 201, body
    return body


def test_backend_issues_a_token_and_paho_uses_it(control):
    alice, body = token_client(control, "alice")
    assert body["acl"] == {"pub": ["users/alice/#"], "sub": ["users/alice/#"]}
    assert body["refresh_at"] < body["expires_at"]
    alice.subscribe("users/alice/inbox")
    assert alice.publish("users/alice/inbox", b"hello").value == 0
    assert alice.expect()[0].payload == b"hello"
    assert alice.publish("users/bob/inbox", b"x").value == 0x87, "the token's ACL applies"
    alice.disconnect()


def test_sk_key_publishes_with_mosquitto_pub(control):
    sk = new_key(control, "sk")
    assert sk["key"].startswith("sk_") and "secret_hash" not in sk
    watcher, _ = token_client(control, "alice")
    watcher.subscribe("users/alice/#")
    out = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(control.port), "-V", "mqttv5",
                          "-u", sk["mqtt_username"], "-P", sk["key"], "-t", "users/alice/notice", "-m", "from the backend", "-q", "1"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    [m] = watcher.expect()
    assert m.payload == b"from the backend"
    watcher.disconnect()


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_rk_key_is_limited_to_its_scopes(control, protocol):
    rk = new_key(control, "rk", ["mqtt:publish:events/#", "mqtt:subscribe:events/#"])
    c = key_client(control, rk, protocol)
    c.subscribe("events/#")
    c.publish("events/a", b"ok")
    assert c.expect()[0].topic == "events/a"
    rc = c.publish("other/x", b"nope")
    if protocol == V5:
        assert rc.value == 0x87
    assert c.quiet() is True
    c.disconnect()


def test_revoking_a_key_closes_its_live_connection(control):
    rk = new_key(control, "rk", ["mqtt:subscribe:events/#"])
    c = key_client(control, rk)
    status, body, _ = control.api("DELETE", f"/v1/keys/{rk['id']}")
    assert status == 200 and body["closed_sessions"] == 1, body
    rc = c.disconnects.get(timeout=TIMEOUT)
    assert rc.value == 0x98, rc
    again = key_client(control, rk, connect=False)
    _, rc = again.connect()
    again.c.loop_stop()
    assert rc.value == 0x86
    status, body, _ = control.api("GET", "/v1/keys")
    listed = {k["id"]: k for k in body["keys"]}
    assert listed[rk["id"]]["revoked_at"] is not None
    assert all("key" not in k and "secret_hash" not in k for k in body["keys"]), "never the secret"


def test_revoke_token_and_user(control):
    carol, body = token_client(control, "carol")
    jti_status, _, _ = control.api("DELETE", f"/v1/tokens/{'0' * 32}")
    assert jti_status == 200
    assert carol.quiet(0.3) is True, "another token's revocation leaves carol alone"
    status, body, _ = control.api("POST", "/v1/users/carol/revoke")
    assert status == 200 and body["closed_sessions"] == 1
    assert carol.disconnects.get(timeout=TIMEOUT).value == 0x98
    status, feed, _ = control.api("GET", "/v1/revocations?after=0")
    assert feed["revocations"][-1]["kind"] == "user" and feed["next"] == feed["revocations"][-1]["seq"]


def test_bad_requests_get_problem_documents(control):
    cases = [
        ("POST", "/v1/tokens", None, b"{not json", None, 400, "invalid_json"),
        ("POST", "/v1/tokens", {"user": "a", "extra": 1}, None, None, 400, "invalid_json"),
        ("POST", "/v1/tokens", {"user": "a/b"}, None, None, 400, "invalid_user"),
        ("POST", "/v1/tokens", None, b'{"user": "' + b"x" * 70000 + b'"}', None, 413, "body_too_large"),
        ("POST", "/v1/tokens", {"user": "a"}, None, "sk_" + "A" * 42, 401, "invalid_key"),
        ("POST", "/v1/keys", {"kind": "zz", "name": "n"}, None, None, 400, "invalid_kind"),
        ("POST", "/v1/keys", {"kind": "rk", "name": "n", "scopes": ["root"]}, None, None, 400, "invalid_scope"),
        ("DELETE", "/v1/keys/nope", None, None, None, 404, "key_not_found"),
        ("GET", "/v1/nowhere", None, None, None, 404, "not_found"),
    ]
    for method, path, body, raw, key, status, code in cases:
        got, doc, headers = control.api(method, path, body, key=key, raw=raw)
        assert (got, doc and doc.get("code")) == (status, code), (path, got, doc)
        assert headers.get("content-type") == "application/problem+json"
    # scope escalation: an rk_ key may not mint a wider token or key
    rk = new_key(control, "rk", ["tokens:issue", "keys:write", "mqtt:publish:events/#"])
    status, doc, _ = control.api("POST", "/v1/tokens", {"user": "a", "acl": {"pub": ["#"], "sub": []}}, key=rk["key"])
    assert (status, doc["code"]) == (403, "scope_escalation")
    status, doc, _ = control.api("POST", "/v1/keys", {"kind": "sk", "name": "up"}, key=rk["key"])
    assert (status, doc["code"]) == (403, "scope_escalation")
    status, doc, _ = control.api("POST", "/v1/tokens", {"user": "a"}, key=rk["key"])
    assert status == 200 and doc["acl"] == {"pub": ["events/#"], "sub": []}
    status, doc, _ = control.api("GET", "/v1/keys", key=rk["key"])
    assert (status, doc["code"]) == (403, "insufficient_scope")
    # an allowlist that excludes loopback
    fenced = new_key(control, "sk", allow_cidrs=["10.0.0.0/8"])
    status, doc, _ = control.api("GET", "/v1/keys", key=fenced["key"])
    assert (status, doc["code"]) == (403, "ip_not_allowed")
    logs = control.logs()
    assert rk["key"] not in logs, "secrets never logged"
    assert logs.count(control.admin) == 1, "the admin key appears once: the first-start banner on stdout"


def test_revocations_and_keys_survive_a_restart(tmp_path):
    b = ControlBroker(tmp_path)
    try:
        admin = b.admin
        dave, body = token_client(b, "dave")
        dave.disconnect()
        creds = body["mqtt_credentials"]
        b.api("POST", "/v1/users/dave/revoke")
        b.restart()
        assert b.admin == admin, "the admin key is kept"
        again = Client(b, "dave", V5, username=creds["username"], token=creds["password"], connect=False)
        _, rc = again.connect()
        again.c.loop_stop()
        assert rc.value == 0x86, "a revoked token stays revoked after a restart"
        status, jwks, _ = b.api("GET", "/.well-known/jwks.json")
        assert status == 200 and len(jwks["keys"]) == 1
        assert oct(os.stat(b.data / "signing-key.jwk").st_mode & 0o777) == "0o600"
        assert oct(os.stat(b.data / "admin.key").st_mode & 0o777) == "0o600"
        if STORE == "sqlite":
            assert oct(os.stat(b.data / "cloudsignal.db").st_mode & 0o777) == "0o600"
    finally:
        b.kill()


def test_sigkill_during_writes_loses_no_acknowledged_write(tmp_path):
    b = ControlBroker(tmp_path)
    acked_keys, acked_revocations = [], []
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                s, body, _ = b.api("POST", "/v1/keys", {"kind": "rk", "name": f"k{n}", "scopes": ["tokens:issue"]})
                if s == 201:
                    acked_keys.append(body["id"])
                s, body, _ = b.api("DELETE", f"/v1/tokens/{n:032x}")
                if s == 200:
                    acked_revocations.append(body["seq"])
            except OSError:
                return

    t = threading.Thread(target=writer)
    t.start()
    # let some writes be acknowledged (however loaded the machine is), then kill mid-stream
    deadline = time.monotonic() + 60
    while (len(acked_keys) < 5 or len(acked_revocations) < 5) and time.monotonic() < deadline:
        time.sleep(0.05)
    b.kill(signal.SIGKILL)
    stop.set()
    t.join(10)
    assert len(acked_keys) > 3 and len(acked_revocations) > 3
    if STORE == "sqlite":
        with sqlite3.connect(b.data / "cloudsignal.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    b.start()
    try:
        _, body, _ = b.api("GET", "/v1/keys")
        stored = {k["id"] for k in body["keys"]}
        assert set(acked_keys) <= stored
        _, feed, _ = b.api("GET", "/v1/revocations?after=0&limit=1000")
        assert set(acked_revocations) <= {e["seq"] for e in feed["revocations"]}
    finally:
        b.kill()


def test_a_second_broker_trusts_the_control_plane_and_follows_its_revocation_feed(control, tmp_path):
    """Broker B has no control plane: it trusts A's issuer through an [[issuers]] table in its
    config file (keys by JWKS URL) and polls A's revocation feed every second."""
    from conftest import free_port
    api = f"http://127.0.0.1:{control.api_port}"
    # the feed is read with a key holding only revocations:read
    feed_key_file = tmp_path / "feed.key"
    feed_key_file.write_text(new_key(control, "rk", ["revocations:read"])["key"])
    config = tmp_path / "b.toml"
    config.write_text(f'''
mqtt_addr = "127.0.0.1:{free_port()}"
ws_addr = "off"
control_addr = "off"
revocation_poll = 1

[[issuers]]
iss = "{api}"
jwks_url = "{api}/.well-known/jwks.json"
revocations_token_file = "{feed_key_file}"
''')
    port = int(config.read_text().split('127.0.0.1:')[1].split('"')[0])
    log = open(tmp_path / "b.log", "w")
    b = subprocess.Popen([BIN, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                import socket
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        _, body, _ = control.api("POST", "/v1/tokens", {"user": "erin"})
        creds = body["mqtt_credentials"]
        erin = Client(control, "erin", V5, username=creds["username"], token=creds["password"], port=port)
        erin.subscribe("users/erin/#")
        started = time.monotonic()
        status, _, _ = control.api("POST", "/v1/users/erin/revoke")
        assert status == 200
        rc = erin.disconnects.get(timeout=10)
        elapsed = time.monotonic() - started
        assert rc.value == 0x98, rc
        print(f"remote revocation applied after {elapsed:.2f} s (poll interval 1 s)")
        again = Client(control, "erin", V5, username=creds["username"], token=creds["password"], port=port, connect=False)
        _, rc = again.connect()
        again.c.loop_stop()
        assert rc.value == 0x86
        assert "revocation applied" in (tmp_path / "b.log").read_text()
    finally:
        b.terminate()
        b.wait(10)
        log.close()


def test_rotation_keeps_the_old_key_for_its_grace_period_then_only_the_new(control):
    rk = new_key(control, "rk", ["mqtt:publish:events/#", "mqtt:subscribe:events/#"])
    status, rotated, _ = control.api("POST", f"/v1/keys/{rk['id']}/rotate", {"grace_seconds": 3})
    assert status == 201, rotated
    assert rotated["replaces"] == rk["id"] and rotated["key"] != rk["key"]
    assert rotated["scopes"] == rk["scopes"], "the new key has the old one's scopes"
    assert rotated["mqtt_username"] == rk["mqtt_username"], "rotation keeps the identity"
    old = key_client(control, rk)  # still valid during the grace period
    new = key_client(control, rotated, client_id="rotated-new")
    new.subscribe("events/#")
    old.publish("events/old", b"during grace")
    assert new.expect()[0].payload == b"during grace"
    # after the grace period the old key's live session is closed and it cannot reconnect
    # (0xA0 when the key's expiry closes it first, 0x98 when the rotation's revocation does)
    assert old.disconnects.get(timeout=10).value in (0x98, 0xA0)
    again = key_client(control, rk, connect=False)
    _, rc = again.connect()
    again.c.loop_stop()
    assert rc.value == 0x86
    assert "cause=api_key: API key " in control.logs(), "the log names the method and why (expired or revoked), not just 'unknown'"
    new.publish("events/new", b"still fine")
    assert new.expect()[0].payload == b"still fine"
    new.disconnect()


def forged_secret(key):
    """The same key id with another secret and a valid checksum (CRC-32, base62)."""
    import zlib
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    body = key[:15] + "Z" * 24
    n, check = zlib.crc32(body.encode()), ""
    for _ in range(6):
        check = alphabet[n % 62] + check
        n //= 62
    return body + check


def test_usage_counts_what_the_test_sent(control):
    rk = new_key(control, "rk", ["mqtt:publish:meter/#", "mqtt:subscribe:meter/#"])
    c = key_client(control, rk)
    c.subscribe("meter/#")
    for n in range(7):
        c.publish("meter/x", b"12345", qos=1)
    assert len(c.expect(7)) == 7
    c.disconnect()
    bad = key_client(control, {**rk, "key": forged_secret(rk["key"])}, connect=False)
    bad.connect()
    bad.c.loop_stop()
    # the refused CONNECT is counted once the broker has answered it
    def usage_with_the_failure():
        status, usage, _ = control.api("GET", f"/v1/keys/{rk['id']}/usage")
        days = usage.get("days") if status == 200 else None
        return usage if days and days[0]["auth_failures"] >= 1 else None
    usage = eventually(usage_with_the_failure)
    assert usage, "the refused CONNECT was never counted"
    [today] = usage["days"]
    assert (today["connects"], today["auth_failures"], today["published"], today["published_bytes"], today["delivered"], today["delivered_bytes"]) == (1, 1, 7, 35, 7, 35), today
    assert usage["last_ip"] == "127.0.0.1" and usage["last_used"] is not None
    status, day, _ = control.api("GET", "/v1/usage")
    assert any(k["subject"] == rk["id"] for k in day["keys"])
    status, doc, _ = control.api("GET", "/v1/usage?day=yesterday")
    assert (status, doc["code"]) == (400, "invalid_day")


def test_signing_key_rotation_keeps_old_tokens_valid_and_survives_a_restart(tmp_path):
    b = ControlBroker(tmp_path)
    try:
        _, before, _ = b.api("POST", "/v1/tokens", {"user": "gus"})
        status, rotated, _ = b.api("POST", "/v1/signing-keys/rotate")
        assert status == 200, rotated
        _, jwks, _ = b.api("GET", "/.well-known/jwks.json")
        assert {k["kid"] for k in jwks["keys"]} == {rotated["kid"], rotated["previous"]}
        _, after, _ = b.api("POST", "/v1/tokens", {"user": "gus"})
        for body in (before, after, before):
            creds = body["mqtt_credentials"]
            c = Client(b, "gus", V5, username=creds["username"], token=creds["password"])
            c.disconnect()
        b.restart()
        for body in (before, after):
            creds = body["mqtt_credentials"]
            c = Client(b, "gus", V5, username=creds["username"], token=creds["password"])
            c.disconnect()
        assert oct(os.stat(b.data / "signing-key.jwk").st_mode & 0o777) == "0o600"
    finally:
        b.kill()


def hs256_jwt(secret: bytes, claims: dict) -> str:
    import base64
    import hashlib
    import hmac
    import json
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_native_exchange_of_a_supabase_jwt(tmp_path):
    import uuid
    secret = b"super-secret-jwt-token-with-at-least-32-characters-long"
    (tmp_path / "supabase.secret").write_bytes(secret)
    b = ControlBroker(tmp_path, extra=["--supabase-jwt-secret-file", str(tmp_path / "supabase.secret")])
    try:
        sub = str(uuid.uuid4())
        now = int(time.time())
        claims = {"iss": "http://127.0.0.1:54321/auth/v1", "aud": "authenticated", "sub": sub,
                  "role": "authenticated", "iat": now, "exp": now + 600}
        status, body, _ = b.api("POST", "/v1/token/exchange", key=hs256_jwt(secret, claims))
        assert status == 200, body
        creds = body["mqtt_credentials"]
        assert creds["username"] == f"{sub}@{b.org}"
        c = Client(b, sub, V5, username=creds["username"], token=creds["password"])
        c.subscribe(f"users/{sub}/inbox")
        c.publish(f"users/{sub}/inbox", b"exchanged")
        assert c.expect()[0].payload == b"exchanged"
        c.disconnect()
        forged = hs256_jwt(b"another-secret-of-at-least-32-characters!!", claims)
        for bearer, code in [(forged, "invalid_token"), (creds["password"], "invalid_token"), (b.admin, "invalid_token")]:
            status, doc, _ = b.api("POST", "/v1/token/exchange", key=bearer)
            assert (status, doc["code"]) == (401, code), doc
        expired = hs256_jwt(secret, {**claims, "exp": now - 120, "iat": now - 700})
        status, doc, _ = b.api("POST", "/v1/token/exchange", key=expired)
        assert (status, doc["code"]) == (401, "invalid_token")
    finally:
        b.kill()


def test_exchange_is_off_without_an_identity_provider(control):
    status, doc, _ = control.api("POST", "/v1/token/exchange", key="x.y.z")
    assert (status, doc["code"]) == (404, "exchange_not_configured")
