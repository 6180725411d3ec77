"""Orgs are tenants: two orgs on one real `cloudsignal serve`, each with its own `sk_` key,
`rk_` key and users with the same ids, see only their own org's messages, retained messages,
shared subscriptions, sessions, usage, keys and audit log. A third party, an external token
issuer bound to its own org, cannot mint its way into either.

Clients are paho-mqtt, mosquitto_pub and mosquitto_sub (nobody here wrote them)."""

import json
import subprocess
import time

import pytest

from conftest import BIN, ISSUER, ControlBroker
from paho_client import V311, V5, Client, eventually
from test_control import key_client, new_key

WORKER_ORG = "org_workerorgabc"


class Org:
    """One tenant of the shared broker: its admin key and what it can mint."""

    def __init__(self, control, admin_key):
        self.control = control
        self.admin = admin_key
        status, body, _ = control.api("POST", "/v1/tokens", {"user": "probe"}, key=admin_key)
        assert status == 200, body
        self.id = body["mqtt_credentials"]["username"].split("@")[1]

    def api(self, method, path, body=None):
        return self.control.api(method, path, body, key=self.admin)

    def user(self, user, protocol=V5, acl=None, **kw):
        req = {"user": user, "ttl": 600}
        if acl:
            req["acl"] = acl
        status, body, _ = self.api("POST", "/v1/tokens", req)
        assert status == 200, body
        creds = body["mqtt_credentials"]
        assert creds["username"] == f"{user}@{self.id}"
        return Client(self.control, user, protocol, username=creds["username"], token=creds["password"], **kw)

    def key(self, kind, scopes=()):
        k = new_key(self.control, kind, scopes, key=self.admin)
        assert k["org"] == self.id and k["mqtt_username"].endswith(f"@{self.id}")
        return k


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tenants")
    issuer_key = tmp / "worker.jwk"
    subprocess.run([BIN, "keygen", "--kid", "w-1", "--out", str(issuer_key)], check=True, capture_output=True)
    jwks = tmp / "worker-jwks.json"
    jwks.write_text(subprocess.run([BIN, "jwks", str(issuer_key)], check=True, capture_output=True, text=True).stdout)
    control = ControlBroker(tmp, extra=["--issuer", ISSUER, "--issuer-jwks", str(jwks),
                                        "--issuer-revocations", "off", "--issuer-org", WORKER_ORG])
    # a second org, created while the broker serves
    out = subprocess.run([BIN, "admin", "create-org", "--data-dir", str(control.data), "--name", "beta"], env=control.offline_env(),
                         check=True, capture_output=True, text=True).stdout
    key_b = next(line.strip() for line in out.splitlines() if line.strip().startswith("sk_"))
    org_a = Org(control, control.admin)
    # the org's keys work at once; its tokens once the broker re-read the orgs (<= 10 s)
    org_b = Org(control, key_b)
    assert org_a.id != org_b.id and org_b.id in out
    probe = eventually(lambda: _connects(org_b), timeout=30)
    assert probe, "a token of the new org is accepted within the refresh interval"
    yield control, org_a, org_b, issuer_key
    if control.proc.poll() is None:
        control.kill()


def _connects(org):
    c = org.user("probe", connect=False)
    _, rc = c.connect()
    ok = rc.value == 0
    if ok:
        c.disconnect()
    else:
        c.c.loop_stop()
    return ok


def mosquitto_sub(control, key, topic, count, extra=()):
    """mosquitto_sub with an API key, collecting `count` messages (or what came in 5 s)."""
    return subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(control.port), "-V", "mqttv5", "-q", "1",
         "-u", key["mqtt_username"], "-P", key["key"], "-t", topic, "-v", "-C", str(count), "-W", "5", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def mosquitto_pub(control, key, topic, message, extra=()):
    r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(control.port), "-V", "mqttv5", "-q", "1",
                        "-u", key["mqtt_username"], "-P", key["key"], "-t", topic, "-m", message, *extra],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_same_user_ids_in_two_orgs_see_only_their_own_messages(tenants):
    control, a, b, _ = tenants
    alice_a, alice_b = a.user("alice"), b.user("alice", protocol=V311)
    for c in (alice_a, alice_b):
        assert c.subscribe("users/alice/#")[0].value < 0x80
    assert alice_a.publish("users/alice/inbox", b"from A").value == 0
    assert alice_b.publish("users/alice/inbox", b"from B").value == 0
    assert [m.payload for m in alice_a.expect()] == [b"from A"]
    assert [m.payload for m in alice_b.expect()] == [b"from B"]
    assert alice_a.quiet() is True and alice_b.quiet() is True
    alice_a.disconnect()
    alice_b.disconnect()


def test_an_orgs_sk_key_on_hash_sees_only_its_org(tenants):
    control, a, b, _ = tenants
    sk_a, sk_b = a.key("sk"), b.key("sk")
    watch_a = mosquitto_sub(control, sk_a, "#", 2)
    watch_b = mosquitto_sub(control, sk_b, "#", 2)
    time.sleep(1)  # both subscribed before anything is sent (mosquitto_sub has no ready signal)
    bob_b = b.user("bob")
    assert bob_b.publish("users/bob/private", b"B secret").value == 0
    mosquitto_pub(control, sk_a, "users/bob/private", "A notice")
    mosquitto_pub(control, sk_b, "broadcast", "B broadcast")
    mosquitto_pub(control, sk_a, "broadcast", "A broadcast")
    out_a, _ = watch_a.communicate(timeout=30)
    out_b, _ = watch_b.communicate(timeout=30)
    assert out_a.splitlines() == ["users/bob/private A notice", "broadcast A broadcast"]
    assert out_b.splitlines() == ["users/bob/private B secret", "broadcast B broadcast"]
    bob_b.disconnect()


def test_rk_keys_retained_messages_and_shared_groups_stay_in_their_org(tenants):
    control, a, b, _ = tenants
    rk_a = a.key("rk", ["mqtt:publish:status/#", "mqtt:subscribe:status/#", "mqtt:subscribe:$share/g/status/#"])
    rk_b = b.key("rk", ["mqtt:publish:status/#", "mqtt:subscribe:status/#", "mqtt:subscribe:$share/g/status/#"])
    mosquitto_pub(control, rk_a, "status/device-1", "A online", ["-r"])
    # org B sees none of org A's retained messages, and its own retained message is its own
    late_b = key_client(control, rk_b)
    assert late_b.subscribe("status/#")[0].value == 1
    assert late_b.quiet() is True, "no retained message from another org"
    mosquitto_pub(control, rk_b, "status/device-1", "B online", ["-r"])
    assert [m.payload for m in late_b.expect()] == [b"B online"]
    late_a = key_client(control, rk_a)
    assert late_a.subscribe("status/#")[0].value == 1
    [m] = late_a.expect()
    assert (m.payload, m.retain) == (b"A online", True)
    assert late_a.quiet() is True
    # one shared group name in both orgs: two groups, each receiving only its org's messages
    share_a, share_b = key_client(control, rk_a), key_client(control, rk_b)
    assert share_a.subscribe("$share/g/status/#")[0].value == 1
    assert share_b.subscribe("$share/g/status/#")[0].value == 1
    for i in range(4):
        mosquitto_pub(control, rk_a, f"status/a{i}", f"A{i}")
    assert sorted(m.payload for m in share_a.expect(4)) == [b"A0", b"A1", b"A2", b"A3"]
    assert share_b.quiet() is True
    for c in (late_a, late_b, share_a, share_b):
        c.disconnect()


def test_one_client_id_in_two_orgs_is_two_sessions(tenants):
    control, a, b, _ = tenants
    first = a.user("carol", client_id="device-1", clean=False, session_expiry=300)
    first.subscribe("users/carol/#")
    second = b.user("carol", client_id="device-1", clean=False, session_expiry=300, connect=False)
    flags, rc = second.connect()
    assert rc.value == 0 and not flags.session_present, "another org's client id is another session"
    assert first.disconnects.empty(), "no takeover across orgs"
    assert first.publish("users/carol/x", b"still mine").value == 0
    assert first.expect()[0].payload == b"still mine"
    first.disconnect()
    second.disconnect()


def test_usage_keys_and_audit_are_per_org(tenants):
    control, a, b, _ = tenants
    dave = b.user("dave-only-in-b")
    assert dave.publish("users/dave-only-in-b/x", b"counted").value == 0
    dave.disconnect()
    key_a = a.key("rk", ["usage:read"])

    def users(org):
        status, body, _ = org.api("GET", "/v1/usage")
        assert status == 200, body
        return {u["subject"] for u in body["users"]}, {k["subject"] for k in body["keys"]}
    b_users = eventually(lambda: f"dave-only-in-b@{b.id}" in users(b)[0] and users(b))
    assert b_users, "usage reaches org B"
    a_users, a_keys = users(a)
    assert all(u.endswith(f"@{a.id}") for u in a_users), a_users
    assert all(u.endswith(f"@{b.id}") for u in b_users[0]), b_users
    # another org's key is as absent as a missing one: not listed, not revocable, no usage
    a_key_ids = {k["id"] for k in a.api("GET", "/v1/keys")[1]["keys"]}
    b_key_ids = {k["id"] for k in b.api("GET", "/v1/keys")[1]["keys"]}
    assert key_a["id"] in a_key_ids and not a_key_ids & b_key_ids
    assert b.api("DELETE", f"/v1/keys/{key_a['id']}")[0] == 404
    assert b.api("POST", f"/v1/keys/{key_a['id']}/rotate", {})[0] == 404
    assert b.api("GET", f"/v1/keys/{key_a['id']}/usage")[0] == 404
    assert a.api("GET", f"/v1/keys/{key_a['id']}/usage")[0] == 200
    assert not {e["org"] for e in b.api("GET", "/v1/audit")[1]["entries"]} - {b.id}
    assert not {e["org"] for e in a.api("GET", "/v1/audit")[1]["entries"]} - {a.id}
    # revoking a user in org B leaves the same user id in org A connected
    erin_a, erin_b = a.user("erin"), b.user("erin")
    assert b.api("POST", "/v1/users/erin/revoke")[0] == 200
    assert eventually(lambda: not erin_b.disconnects.empty())
    assert erin_b.disconnects.get().value == 0x98
    assert erin_a.disconnects.empty()
    assert erin_a.publish("users/erin/x", b"unaffected").value == 0
    erin_a.disconnect()


def test_an_issuer_bound_to_its_org_cannot_mint_for_another(tenants):
    control, a, b, issuer_key = tenants

    def minted(org, user="mallory"):
        return subprocess.run([BIN, "token", "issue", "--key", str(issuer_key), "--issuer", ISSUER, "--user", user,
                               "--org", org, "--pub", "#", "--sub", "#", "--ttl", "600"],
                              check=True, capture_output=True, text=True).stdout.strip()
    # into the control plane's orgs, with a full ACL: refused
    for org in (a.id, b.id, "org_zzzzzzzzzzzz"):
        c = Client(control, "mallory", V5, username=f"mallory@{org}", token=minted(org), connect=False)
        _, rc = c.connect()
        c.c.loop_stop()
        assert rc.value == 0x86, (org, rc)
    assert "issuer may not issue tokens for org" in control.logs()
    # in its own org, even with `#`, it sees only its own tenant
    own = Client(control, "mallory", V5, username=f"mallory@{WORKER_ORG}", token=minted(WORKER_ORG))
    assert own.subscribe("#")[0].value == 1
    victim = a.user("victor")
    assert victim.publish("users/victor/secret", b"not for the worker org").value == 0
    assert own.quiet() is True
    own.disconnect()
    victim.disconnect()


def test_live_sessions_kicks_and_figures_stay_in_their_org(tenants):
    """The dashboard's endpoints: another org's live sessions are not listed and cannot be
    kicked; a key without sessions:write cannot kick in its own org either; the live figures
    count only the caller's org."""
    control, a, b, _ = tenants
    gina_a = a.user("gina", client_id="gina-phone")
    gina_b = b.user("gina", client_id="gina-phone")

    def listed(org):
        status, body, _ = org.api("GET", "/v1/sessions")
        assert status == 200, body
        return {s["client_id"]: s for s in body["sessions"]}
    seen_a, seen_b = listed(a), listed(b)
    assert seen_a["gina-phone"]["username"] == f"gina@{a.id}" and seen_a["gina-phone"]["method"] == "token"
    assert all(s["username"].endswith(f"@{a.id}") for s in seen_a.values()), seen_a
    assert all(s["username"].endswith(f"@{b.id}") for s in seen_b.values()), seen_b
    # org B's admin key names org A's connection: as absent as a missing one
    assert b.api("POST", f"/v1/sessions/{seen_a['gina-phone']['id']}/kick")[0] == 404
    assert gina_a.quiet(0.3) is True and gina_a.disconnects.empty()
    # a reader in org A cannot kick
    reader = a.key("rk", ["sessions:read"])
    status, doc, _ = control.api("POST", f"/v1/sessions/{seen_a['gina-phone']['id']}/kick", key=reader["key"])
    assert (status, doc["code"]) == (403, "insufficient_scope")
    # org A's admin kicks its own: 0x98, and org B's gina stays
    assert a.api("POST", f"/v1/sessions/{seen_a['gina-phone']['id']}/kick")[0] == 200
    assert gina_a.disconnects.get(timeout=5).value == 0x98
    assert gina_b.disconnects.empty()
    gina_b.disconnect()
    # the live figures: org B's stream counts org B's connections only
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", control.api_port, timeout=10)
    c.request("GET", "/v1/stats/stream", headers={"Authorization": f"Bearer {b.admin}"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    line = b""
    while not line.startswith(b"data: "):
        line = r.fp.readline()
    figures = json.loads(line[6:])
    c.close()
    assert figures["connections"] == len(listed(b)), figures
