"""Privilege boundaries, tried as an attacker would against a real `cloudsignal serve`.

Each test is one attack: a lower-privileged party tries to become someone else or act wider
than it may. Every test also keeps a bystander working, so a refusal never costs anyone else.
Clients are paho-mqtt and mosquitto_pub/sub (nobody here wrote them); HTTP is urllib."""

import http.client
import json
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import BIN, ControlBroker
from paho_client import TIMEOUT, V311, V5, Client, eventually
from test_control import key_client, new_key, token_client


def api_from(control, source, method, path, key, body=None):
    """One API call from a chosen loopback source address (127.0.0.x)."""
    conn = http.client.HTTPConnection("127.0.0.1", control.api_port, timeout=10, source_address=(source, 0))
    headers = {"Authorization": f"Bearer {key}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = conn.getresponse()
    text = r.read()
    conn.close()
    return r.status, json.loads(text) if text else None


def bystander(control, user="bystander"):
    """A user who must keep working whatever the attacker does: a full round trip."""
    c, _ = token_client(control, user)
    assert c.subscribe(f"users/{user}/#")[0].value < 0x80
    assert c.publish(f"users/{user}/ping", b"still here").value == 0
    assert c.expect()[0].payload == b"still here"
    c.disconnect()


# 1. An API key is one identity


def test_a_key_cannot_connect_as_a_user_nor_take_over_their_session(control):
    alice, _ = token_client(control, "alice", client_id="phone-1", clean=False, session_expiry=300)
    alice.subscribe("users/alice/#")
    usage_only = new_key(control, "rk", ["usage:read"])
    scoped = new_key(control, "rk", ["mqtt:publish:users/alice/#", "mqtt:subscribe:users/alice/#"])
    # the key's one identity is in the create response and the listing
    assert scoped["mqtt_username"] == f"{scoped['name']}@{control.org}" and scoped["org"] == control.org
    listed = {k["id"]: k for k in control.api("GET", "/v1/keys")[1]["keys"]}
    assert listed[scoped["id"]]["mqtt_username"] == scoped["mqtt_username"]
    for k in (usage_only, scoped):
        # alice's username, alice's client id, resuming: refused, and alice never notices
        thief = Client(control, "alice", V5, client_id="phone-1", clean=False, session_expiry=300,
                       username=f"alice@{control.org}", token=k["key"], connect=False)
        _, rc = thief.connect()
        thief.c.loop_stop()
        assert rc.value == 0x86, (k["name"], rc)
    # with its own identity and alice's client id it gets its own, new session
    own = key_client(control, scoped, client_id="phone-1", clean=False, session_expiry=300, connect=False)
    flags, rc = own.connect()
    assert rc.value == 0 and not flags.session_present, "another identity's client id is another session"
    own.disconnect()
    # an rk_ key without any mqtt: scope cannot connect at all, even as itself
    lone = key_client(control, usage_only, connect=False)
    _, rc = lone.connect()
    lone.c.loop_stop()
    assert rc.value == 0x87
    assert alice.disconnects.empty(), "alice was never taken over"
    assert alice.publish("users/alice/x", b"mine").value == 0
    assert alice.expect()[0].payload == b"mine"
    alice.disconnect()
    logs = control.logs()
    assert "a key is one identity" in logs and "has no mqtt: scope" in logs
    bystander(control)


def test_a_resumed_session_keeps_only_what_the_new_login_allows(control):
    wide = control.api("POST", "/v1/tokens", {"user": "carl", "acl": {"pub": ["users/carl/#", "shared/#"], "sub": ["users/carl/#", "shared/#"]}})[1]
    creds = wide["mqtt_credentials"]
    c = Client(control, "carl", V5, client_id="carl-1", clean=False, session_expiry=300,
               username=creds["username"], token=creds["password"])
    assert c.subscribe("shared/#")[0].value == 1
    assert c.subscribe("users/carl/#")[0].value == 1
    c.disconnect()
    narrow, _ = token_client(control, "carl", client_id="carl-1", clean=False, session_expiry=300, connect=False)
    flags, rc = narrow.connect()
    assert rc.value == 0 and flags.session_present, "the session resumes"
    sk = new_key(control, "sk")
    publisher = key_client(control, sk)
    publisher.publish("shared/news", b"not for carl any more")
    publisher.publish("users/carl/inbox", b"for carl")
    [m] = narrow.expect()
    assert m.payload == b"for carl"
    assert narrow.quiet() is True, "the subscription the new ACL refuses was removed"
    assert "removed_subscriptions=1" in control.logs()
    narrow.disconnect()
    publisher.disconnect()


# 2. A restricted key stays restricted


def test_a_restricted_key_cannot_act_wider_than_itself(control):
    manager = new_key(control, "rk", ["keys:write", "keys:read", "mqtt:publish:events/#"],
                      allow_cidrs=["127.0.0.0/8"], expires_at=int(time.time()) + 3600)
    wider = new_key(control, "rk", ["keys:write", "mqtt:publish:#"])
    admins = [k for k in control.api("GET", "/v1/keys")[1]["keys"] if k["kind"] == "sk" and k["revoked_at"] is None]
    mk = manager["key"]
    attempts = [
        ("POST", f"/v1/keys/{wider['id']}/rotate", {}),  # would hand it the wider key's secret
        ("DELETE", f"/v1/keys/{admins[0]['id']}", None),  # would lock the admin out
        ("POST", f"/v1/keys/{admins[0]['id']}/rotate", {}),
        ("POST", "/v1/keys", {"kind": "sk", "name": "up"}),
        ("POST", "/v1/keys", {"kind": "rk", "name": "wide", "scopes": ["mqtt:publish:#"]}),
        ("POST", "/v1/keys", {"kind": "rk", "name": "open", "scopes": ["mqtt:publish:events/a"], "allow_cidrs": ["0.0.0.0/0"]}),
        ("POST", "/v1/keys", {"kind": "rk", "name": "late", "scopes": ["mqtt:publish:events/a"], "expires_at": int(time.time()) + 7200}),
        ("POST", "/v1/keys", {"kind": "rk", "name": "usage", "scopes": ["usage:read"]}),
    ]
    for method, path, body in attempts:
        status, doc, _ = control.api(method, path, body, key=mk)
        assert (status, doc["code"]) == (403, "scope_escalation"), (method, path, doc)
    # what it may do: a narrower key, which inherits its limits instead of dropping them
    status, child, _ = control.api("POST", "/v1/keys", {"kind": "rk", "name": f"child-{os.getpid()}", "scopes": ["mqtt:publish:events/a/#"]}, key=mk)
    assert status == 201, child
    assert child["allow_cidrs"] == ["127.0.0.0/8"] and child["expires_at"] == manager["expires_at"]
    assert control.api("DELETE", f"/v1/keys/{child['id']}", key=mk)[0] == 200
    # every attempt is in the audit log, attributed and refused
    status, audit, _ = control.api("GET", "/v1/audit?after=0&limit=1000")
    assert status == 200
    mine = [e for e in audit["entries"] if e["actor"] == manager["id"]]
    assert [e["outcome"] for e in mine].count("scope_escalation") == len(attempts)
    assert {"key.create", "key.rotate", "key.revoke"} <= {e["action"] for e in mine}
    assert all(e["peer"] == "127.0.0.1" and e["actor_kind"] == "rk" for e in mine)
    assert mk not in json.dumps(audit), "never a secret in the audit log"
    # the audit log itself is not readable without audit:read
    status, doc, _ = control.api("GET", "/v1/audit", key=mk)
    assert (status, doc["code"]) == (403, "insufficient_scope")
    bystander(control)


def test_the_last_admin_key_cannot_be_revoked_and_can_be_recovered_offline(tmp_path):
    b = ControlBroker(tmp_path)
    try:
        keys = b.api("GET", "/v1/keys")[1]["keys"]
        [admin] = [k for k in keys if k["kind"] == "sk"]
        assert admin["mqtt_username"] == f"admin@{b.org}"
        status, doc, _ = b.api("DELETE", f"/v1/keys/{admin['id']}")
        assert (status, doc["code"]) == (409, "last_admin_key"), doc
        assert b.api("GET", "/v1/keys")[0] == 200, "the admin still works"
        # with a second sk_ key the first may go; then the second is the last
        second = new_key(b, "sk")
        assert b.api("DELETE", f"/v1/keys/{admin['id']}", key=second["key"])[0] == 200
        assert b.api("DELETE", f"/v1/keys/{second['id']}", key=second["key"])[1]["code"] == "last_admin_key"
        # every admin key lost: the data directory's holder mints a new one, while serve runs
        out = subprocess.run([BIN, "admin", "recover", "--data-dir", str(b.data)], capture_output=True, text=True, timeout=60, env=b.offline_env())
        assert out.returncode == 0, out.stderr
        recovered = re.search(r"(sk_[A-Za-z0-9]+)", out.stdout).group(1)
        assert (b.data / "admin.key").read_text().strip() == recovered
        assert oct(os.stat(b.data / "admin.key").st_mode & 0o777) == "0o600"
        status, audit, _ = b.api("GET", "/v1/audit", key=recovered)
        assert status == 200 and any(e["action"] == "admin.recover" and e["actor"] == "local" for e in audit["entries"])
        bad = subprocess.run([BIN, "admin", "recover", "--data-dir", str(tmp_path / "nowhere")], capture_output=True, text=True)
        assert bad.returncode != 0 and "no CloudSignal store" in bad.stderr
    finally:
        b.kill()


# 4. Throttling that cannot be turned against a user


def test_failing_in_a_users_name_bans_the_source_never_the_user(tmp_path):
    b = ControlBroker(tmp_path, max_failures=5, extra=["--ban-seconds", "60"])
    try:
        victim = b.api("POST", "/v1/tokens", {"user": "victim", "ttl": 600})[1]["mqtt_credentials"]
        for _ in range(8):
            c = Client(b, "victim", V311, username=victim["username"], token="tkn_forged.x.y", connect=False, bind="127.0.0.2")
            c.connect()
            c.c.loop_stop()
        # the attacker's address is banned, even with a valid credential
        c = Client(b, "victim", V5, username=victim["username"], token=victim["password"], connect=False, bind="127.0.0.2")
        _, rc = c.connect()
        c.c.loop_stop()
        assert rc.value == 0x8A, rc
        # the victim, from anywhere else, is let in at once
        for source in ("127.0.0.3", "127.0.0.1"):
            v = Client(b, "victim", V5, username=victim["username"], token=victim["password"], connect=False, bind=source)
            _, rc = v.connect()
            assert rc.value == 0, (source, rc)
            v.disconnect()
        # the HTTP API bans failing sources too, before any bcrypt
        for _ in range(6):
            api_from(b, "127.0.0.4", "GET", "/v1/keys", "sk_" + "A" * 42)
        status, doc = api_from(b, "127.0.0.4", "GET", "/v1/keys", b.admin)
        assert (status, doc["code"]) == (429, "too_many_failures")
        assert api_from(b, "127.0.0.5", "GET", "/v1/keys", b.admin)[0] == 200
        bystander(b)
    finally:
        b.kill()


# 5. Bounded buffering while a CONNECT waits


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_bytes_sent_before_connack_are_not_buffered(tmp_path):
    # a long refusal delay: the CONNECT waits 3 s for its answer while the client keeps sending
    b = ControlBroker(tmp_path, delay_ms=3000)
    try:
        before = rss_kib(b.proc.pid)
        s = socket.create_connection(("127.0.0.1", b.port))
        user = f"x@{b.org}".encode()
        payload = b"\x00\x04MQTT\x04\xc2\x00\x1e" + b"\x00\x02zz" + len(user).to_bytes(2, "big") + user + b"\x00\x0ctkn_forged.x"
        s.sendall(bytes([0x10, len(payload)]) + payload)
        s.settimeout(2)
        sent, chunk = 0, b"\x30\x7f" + b"\x00\x01t" + b"A" * 124
        try:
            while sent < 64 << 20:
                sent += s.send(chunk * 512)
        except (socket.timeout, BlockingIOError):
            pass
        grew = rss_kib(b.proc.pid) - before
        print(f"accepted by the kernel before the broker's answer: {sent >> 10} KiB; broker RSS grew {grew} KiB")
        assert sent < 16 << 20, "the broker stopped reading: the socket's window holds the rest"
        assert grew < 16 << 10
        s.close()
        bystander(b)
    finally:
        b.kill()


# 6. Quotas


def test_quotas_refuse_with_0x97_and_spare_everyone_else(tmp_path):
    b = ControlBroker(tmp_path, extra=[
        "--max-subscriptions-per-client", "3", "--max-connections-per-identity", "2",
        "--max-sessions-per-identity", "1", "--max-retained-per-identity", "2",
        "--max-retained-bytes-per-identity", "1000"])
    try:
        a, _ = token_client(b, "quota")
        codes = [a.subscribe(f"users/quota/{n}")[0].value for n in range(4)]
        assert codes == [1, 1, 1, 0x97], codes
        assert a.subscribe("users/quota/0")[0].value == 1, "re-subscribing an existing filter is no new subscription"
        # retained: two messages, then 0x97; replacing one of them is fine
        assert a.publish("users/quota/r1", b"1", retain=True).value == 0
        assert a.publish("users/quota/r2", b"2", retain=True).value == 0
        assert a.publish("users/quota/r3", b"3", retain=True).value == 0x97
        assert a.publish("users/quota/r1", b"1b", retain=True).value == 0
        assert a.publish("users/quota/r2", b"x" * 2000, retain=True).value == 0x97, "bytes are limited too"
        # connections: a second is fine, a third is refused
        second, _ = token_client(b, "quota")
        third, _ = token_client(b, "quota", connect=False)
        _, rc = third.connect()
        third.c.loop_stop()
        assert rc.value == 0x97
        second.disconnect()
        # persistent sessions: one
        p1, _ = token_client(b, "quota", client_id="p1", clean=False, session_expiry=60)
        p1.disconnect()
        p2, _ = token_client(b, "quota", client_id="p2", clean=False, session_expiry=60, connect=False)
        _, rc = p2.connect()
        p2.c.loop_stop()
        assert rc.value == 0x97
        # everyone else is unaffected by quota's quotas
        bystander(b)
        watcher, _ = token_client(b, "quota-reader")
        logs = b.logs()
        assert "at most 3 subscriptions per client" in logs and "at most 2 retained messages per identity" in logs
        watcher.disconnect()
        a.disconnect()
    finally:
        b.kill()


# 7. Client ids


def test_client_ids_are_scoped_to_their_identity_and_assigned_unpredictably(control):
    alice, _ = token_client(control, "alice", client_id="shared-id")
    mallory, _ = token_client(control, "mallory", client_id="shared-id")
    assert alice.disconnects.empty() and mallory.disconnects.empty(), "nobody was taken over"
    assert alice.publish("users/alice/x", b"ok").value == 0
    alice.disconnect()
    mallory.disconnect()
    # empty client ids (v5) get random assigned ids: 128 bits, nothing sequential to guess
    for _ in range(3):
        c, _ = token_client(control, "alice", client_id="")
        c.disconnect()
    assigned = sorted(set(re.findall(r"cs-[0-9a-f]{32}", control.logs())))
    assert len(assigned) >= 3, assigned
    # a $ client id never fills a {client_id} template (which would reach $SYS)
    body = control.api("POST", "/v1/tokens", {"user": "dev", "acl": {"pub": ["{client_id}/#"], "sub": ["{client_id}/#"]}})[1]
    creds = body["mqtt_credentials"]
    c = Client(control, "dev", V5, client_id="$SYS", username=creds["username"], token=creds["password"], connect=False)
    _, rc = c.connect()
    c.c.loop_stop()
    assert rc.value == 0x85
    ok = Client(control, "dev", V5, client_id="dev-1", username=creds["username"], token=creds["password"])
    assert ok.subscribe("dev-1/#")[0].value == 1
    ok.disconnect()


# 8. No will from a revoked session; revocation ends stored sessions


def test_revocation_publishes_no_will_and_ends_stored_sessions(control):
    sk = new_key(control, "sk")
    watcher = key_client(control, sk)
    watcher.subscribe("users/+/status")
    # control: an ordinary drop publishes the will (so this test can fail)
    d, _ = token_client(control, "dora", will=("users/dora/status", b"dora gone", 0))
    d.drop()
    assert watcher.expect()[0].payload == b"dora gone"
    e, _ = token_client(control, "eve", will=("users/eve/status", b"eve gone", 0))
    status, body, _ = control.api("POST", "/v1/users/eve/revoke")
    assert status == 200 and body["closed_sessions"] == 1
    assert e.disconnects.get(timeout=TIMEOUT).value == 0x98
    assert watcher.quiet(1.0) is True, "a revoked session's will is not published"
    # a stored session owned by a revoked user ends with the revocation
    f, _ = token_client(control, "fay", client_id="fay-1", clean=False, session_expiry=300)
    f.subscribe("users/fay/#")
    f.disconnect()
    time.sleep(1.1)  # a new token's iat must be after the revocation
    control.api("POST", "/v1/users/fay/revoke")
    time.sleep(1.1)
    again, _ = token_client(control, "fay", client_id="fay-1", clean=False, session_expiry=300, connect=False)
    flags, rc = again.connect()
    assert rc.value == 0 and not flags.session_present, "the revoked user's stored session is gone"
    again.disconnect()
    watcher.disconnect()


def test_invalid_config_values_are_errors_not_panics(tmp_path):
    for args, needle in [
        (["--max-token-ttl", "4"], "max-token-ttl"),
        (["--issuer", "https://i", "--issuer-jwks", "http://evil.example/jwks.json"], "https:// URL"),
    ]:
        out = subprocess.run([BIN, "serve", "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--control-addr", "off", *args],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and needle in out.stderr, (args, out.stderr)
        assert "panicked" not in out.stderr


# 9. The revocation feed is not public


def test_the_revocation_feed_needs_revocations_read(control):
    status, doc, _ = control.api("GET", "/v1/revocations?after=0", key="sk_" + "B" * 42)
    assert status == 401
    rk = new_key(control, "rk", ["usage:read"])
    status, doc, _ = control.api("GET", "/v1/revocations?after=0", key=rk["key"])
    assert (status, doc["code"]) == (403, "insufficient_scope")
    reader = new_key(control, "rk", ["revocations:read"])
    status, feed, _ = control.api("GET", "/v1/revocations?after=0", key=reader["key"])
    assert status == 200 and "revocations" in feed
