"""Directory sync against a real OpenLDAP server: users and groups synced from an OpenLDAP tree
and an Active Directory-style one, group roles in the tokens and enforced by the broker, users
deleted or disabled kicked from live paho-mqtt sessions (0x98) within one sync interval, a
group change reaching the next token, a directory that is down or returns nothing
deprovisioning no one, and 10,000 users read with paged searches."""

import json
import subprocess
import time

import pytest

from conftest import BIN, ControlBroker
from test_control import hs256_jwt
from paho_client import TIMEOUT, V5, Client, eventually
from slapd import SUFFIX, Slapd, ad_guid, ad_user, group, person

INTERVAL = 2  # seconds between syncs in these tests (the default is 300)

ROLE_MAP = {
    "default": {"pub": ["users/{user}/#"], "sub": ["users/{user}/#"]},
    "roles": {
        "sensor-writer": {"pub": ["sensors/{user}/#"], "sub": ["sensors/#"]},
        "operator": {"pub": ["ops/#"], "sub": ["ops/#", "sensors/#"]},
    },
    "deny_roles": [],
}


def directory_config(tmp, ldap, sources, extra=""):
    """A config file with `[[directories]]` for `sources` (name, preset, base[, url and TLS
    settings]) on `ldap`."""
    text = ""
    for name, preset, base, *tls in sources:
        url, tls_settings = (tls + [ldap.url, ""])[:2] if tls else (ldap.url, "")
        text += f"""
[[directories]]
name = "{name}"
preset = "{preset}"
url = "{url}"
{tls_settings}
bind_dn = "cn=sync,{SUFFIX}"
bind_password_file = "{ldap.password_file()}"
base_dn = "{base}"
group_base_dn = "ou=groups,{SUFFIX}"
interval = {INTERVAL}
page_size = 50
timeout = 60
group_roles = {{ "sensors" = "sensor-writer", "mqtt-ops" = "operator", "ops" = "operator" }}
{extra}
"""
    path = tmp / "cloudsignal.toml"
    path.write_text(text)
    return path


def start(tmp, ldap, sources, flags=()):
    config = directory_config(tmp, ldap, sources)
    return ControlBroker(tmp, extra=["--config", str(config), "--role-map", json.dumps(ROLE_MAP), *flags])


SUPABASE_SECRET = b"directory-suite-jwt-secret-of-at-least-32-characters"


def idp_jwt(sub, email=None, verified=True):
    """A Supabase-style HS256 access token (the exchange's identity provider in this suite)."""
    now = int(time.time())
    claims = {"iss": "http://127.0.0.1:54321/auth/v1", "aud": "authenticated", "sub": sub,
              "role": "authenticated", "iat": now - 5, "exp": now + 600}
    if email:
        claims |= {"email": email, "email_verified": verified}
    return hs256_jwt(SUPABASE_SECRET, claims)


def status(control, name):
    code, body, _ = control.api("GET", "/v1/directory/status")
    assert code == 200, body
    return next(s for s in body["directories"] if s["source"] == name)


def synced_after(control, name, t):
    """Waits for a sync of `name` that started after Unix time `t`; returns its status."""
    s = eventually(lambda: (lambda s: s if (s["last_attempt"] or 0) > t else None)(status(control, name)))
    assert s, f"no sync of {name} after {t}"
    return s


def token(control, user, **body):
    return control.api("POST", "/v1/tokens", {"user": user, "ttl": 600, **body})


def connect(control, user):
    code, body, _ = token(control, user)
    assert code == 200, body
    creds = body["mqtt_credentials"]
    return Client(control, user, V5, username=creds["username"], token=creds["password"]), body


def wait_kicked(client, limit):
    """The time until `client` is closed; its reason code must be 0x98."""
    t0 = time.monotonic()
    rc = client.disconnects.get(timeout=limit)
    assert rc.value == 0x98, rc
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def ldap(tmp_path_factory):
    entries = "\n".join([
        person("alice"), person("bob"), person("carol"), person("oscar"),
        group("sensors", ["alice", "carol"]), group("ops", ["bob"]),
        ad_user("dave", ["mqtt-ops"]), ad_user("erin", ["Sensors"]), ad_user("frank", [], disabled=True),
    ])
    s = Slapd(tmp_path_factory.mktemp("slapd"), entries)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def control(tmp_path_factory, ldap):
    tmp = tmp_path_factory.mktemp("dirbroker")
    (tmp / "supabase.secret").write_bytes(SUPABASE_SECRET)
    b = start(tmp, ldap,
              [("corp", "openldap", f"ou=people,{SUFFIX}"), ("ad", "active-directory", f"ou=ad,{SUFFIX}")],
              ["--supabase-jwt-secret-file", str(tmp / "supabase.secret")])
    eventually(lambda: status(b, "corp")["last_success"] and status(b, "ad")["last_success"])
    yield b
    if b.proc.poll() is None:
        b.kill()


def test_users_and_groups_are_synced(control):
    corp = status(control, "corp")
    assert corp["error"] is None, corp
    assert corp["users"] == {"active": 4, "disabled": 0, "removed": 0}
    assert corp["groups"] == 2 and corp["changes"]["added"] == 4
    ad = status(control, "ad")
    assert ad["error"] is None, ad
    assert ad["users"] == {"active": 2, "disabled": 1, "removed": 0}, "frank has the ACCOUNTDISABLE bit"
    assert ad["url"].startswith("ldap://127.0.0.1") and "secret" not in json.dumps(ad)
    # the CLI reads the same from the data directory
    out = subprocess.run([BIN, "directory", "status", "--data-dir", str(control.data)], capture_output=True, text=True, env=control.offline_env())
    assert out.returncode == 0, out.stderr
    assert "corp" in out.stdout and "ad" in out.stdout and "ok" in out.stdout
    out = subprocess.run([BIN, "directory", "status", "--data-dir", str(control.data), "--json"], env=control.offline_env(),
                         capture_output=True, text=True)
    assert {s["source"] for s in json.loads(out.stdout)} == {"corp", "ad"}
    # the stable ids: entryUUID, and AD's objectGUID in its text form
    ids = dict(control.sql("SELECT username, id FROM directory_users"))
    assert ids["dave"] == ad_guid("dave")
    assert len(ids["alice"]) == 36 and ids["alice"] != ids["bob"]


def test_group_roles_are_in_the_token_and_enforced(control):
    code, body, _ = token(control, "alice")
    assert code == 200, body
    assert body["acl"] == {"pub": ["users/alice/#", "sensors/alice/#"], "sub": ["users/alice/#", "sensors/#"]}
    code, body, _ = token(control, "dave")
    assert body["acl"]["pub"] == ["users/dave/#", "ops/#"], body
    alice, _ = connect(control, "alice")
    assert alice.publish("sensors/alice/t", b"21.5").value == 0
    assert alice.publish("ops/alerts", b"x").value == 0x87, "alice is not an operator"
    alice.disconnect()
    # nothing wider than the groups grant, even for the admin key
    code, body, _ = token(control, "alice", acl={"pub": ["ops/#"], "sub": []})
    assert (code, body["code"]) == (403, "outside_directory_grant"), body
    # a disabled AD account gets no token
    code, body, _ = token(control, "frank")
    assert (code, body["code"]) == (403, "user_deprovisioned"), body
    # a name the directory does not list is an ordinary user
    code, body, _ = token(control, "zed")
    assert code == 200 and body["acl"]["pub"] == ["users/zed/#"]


def test_an_exchanged_token_carries_the_directory_users_roles(control):
    import uuid
    sub = str(uuid.uuid4())
    # linked by a verified e-mail address: the token is dave's, with his AD group's role
    code, body, _ = control.api("POST", "/v1/token/exchange", key=idp_jwt(sub, "DAVE@corp.example.test"))
    assert code == 200, body
    assert body["mqtt_credentials"]["username"] == f"dave@{control.org}"
    assert "ops/#" in body["acl"]["pub"], body
    # an unverified address links nothing: an ordinary user, by the provider's subject
    code, body, _ = control.api("POST", "/v1/token/exchange", key=idp_jwt(sub, "dave@corp.example.test", verified=False))
    assert code == 200 and body["mqtt_credentials"]["username"] == f"{sub}@{control.org}", body
    assert body["acl"]["pub"] == [f"users/{sub}/#"]
    # a subject that is a directory user name links too; a disabled one is refused
    code, body, _ = control.api("POST", "/v1/token/exchange", key=idp_jwt("bob"))
    assert code == 200 and "ops/#" in body["acl"]["pub"], body
    for jwt in (idp_jwt("frank"), idp_jwt(sub, "frank@corp.example.test")):
        code, body, _ = control.api("POST", "/v1/token/exchange", key=jwt)
        assert (code, body["code"]) == (403, "user_deprovisioned"), body


def test_a_deleted_user_is_kicked_within_one_interval(control, ldap):
    oscar, _ = connect(control, "oscar")
    oscar.subscribe("users/oscar/#")
    t = time.time()
    ldap.delete(f"uid=oscar,ou=people,{SUFFIX}")
    took = wait_kicked(oscar, INTERVAL + 10)
    s = synced_after(control, "corp", t)
    assert s["changes"]["removed"] == 1 and s["closed_sessions"] >= 1, s
    print(f"\n[directory] delete → 0x98 in {took * 1000:.0f} ms (interval {INTERVAL} s, sync {s['duration_ms']} ms)")
    assert took <= INTERVAL + 5, f"kicked after {took:.1f} s, more than one interval plus a sync"
    # no new token, however the name is spelled, and the old token is refused
    for name in ("oscar", "OSCAR"):
        code, body, _ = token(control, name)
        assert (code, body["code"]) == (403, "user_deprovisioned"), body
    again = Client(control, "oscar", V5, username=f"oscar@{control.org}",
                   token=oscar.c._password.decode(), connect=False)
    _, rc = again.connect()
    again.c.loop_stop()
    assert rc.is_failure, rc


def test_a_disabled_ad_user_is_kicked(control, ldap):
    erin, _ = connect(control, "erin")
    t = time.time()
    ldap.modify(f"dn: cn=Erin Doe,ou=ad,{SUFFIX}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n")
    took = wait_kicked(erin, INTERVAL + 10)
    s = synced_after(control, "ad", t)
    assert s["changes"]["disabled"] == 1, s
    print(f"\n[directory] AD disable → 0x98 in {took * 1000:.0f} ms")
    code, body, _ = token(control, "erin")
    assert (code, body["code"]) == (403, "user_deprovisioned"), body
    # enabled again: tokens again
    ldap.modify(f"dn: cn=Erin Doe,ou=ad,{SUFFIX}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 512\n")
    synced_after(control, "ad", time.time())
    assert eventually(lambda: token(control, "erin")[0] == 200)


def test_a_group_change_reaches_the_next_token(control, ldap):
    # a persistent session: what it subscribed under the old ACL must not outlive the change
    code, body, _ = token(control, "carol")
    creds = body["mqtt_credentials"]
    carol = Client(control, "carol", V5, client_id="carol-phone", clean=False, session_expiry=600,
                   username=creds["username"], token=creds["password"])
    carol.subscribe("sensors/#")
    assert "ops/#" not in body["acl"]["pub"]
    assert carol.publish("ops/alerts", b"x").value == 0x87
    ldap.modify(f"dn: cn=ops,ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\nmember: uid=carol,ou=people,{SUFFIX}\n")
    # her tokens are revoked, so her client refreshes into the new ACL
    wait_kicked(carol, INTERVAL + 10)
    code, body, _ = token(control, "carol")
    assert code == 200, body
    assert "ops/#" in body["acl"]["pub"], body
    carol2 = Client(control, "carol", V5, client_id="carol-phone", clean=False, session_expiry=600,
                    username=body["mqtt_credentials"]["username"], token=body["mqtt_credentials"]["password"],
                    connect=False)
    flags, rc = carol2.connect()
    assert rc.value == 0 and not flags.session_present, "the stored session ended with the revocation"
    assert carol2.publish("ops/alerts", b"now allowed").value == 0
    carol2.disconnect()


def test_the_directory_down_deprovisions_no_one(control, ldap):
    bob, _ = connect(control, "bob")
    ldap.stop()
    try:
        t = time.time()
        s = synced_after(control, "corp", t)
        assert s["error"] and "connect" in s["error"].lower(), s
        s = synced_after(control, "corp", time.time())
        assert s["consecutive_failures"] >= 2
        assert bob.quiet(0.2) is True and bob.disconnects.empty(), "bob stays connected"
        code, _, _ = token(control, "bob")
        assert code == 200, "bob still gets tokens"
        out = subprocess.run([BIN, "directory", "status", "--data-dir", str(control.data)], capture_output=True, text=True, env=control.offline_env())
        assert out.returncode == 1 and "FAILING" in out.stdout, out.stdout
    finally:
        ldap.start()
    s = eventually(lambda: (lambda s: s if s["error"] is None else None)(status(control, "corp")))
    assert s and s["users"]["active"] == 3, s
    assert bob.disconnects.empty()
    bob.disconnect()


def test_directory_api_needs_its_scopes(control):
    code, rk, _ = control.api("POST", "/v1/keys", {"kind": "rk", "name": "issuer-only", "scopes": ["tokens:issue"]})
    assert code == 201, rk
    code, body, _ = control.api("GET", "/v1/directory/status", key=rk["key"])
    assert (code, body["code"]) == (403, "insufficient_scope")
    code, body, _ = control.api("POST", "/v1/directory/sync", {"source": "corp", "confirm_removals": 1000}, key=rk["key"])
    assert (code, body["code"]) == (403, "insufficient_scope")
    # an rk_ key cannot mint a directory user's token wider than the key either
    code, body, _ = control.api("POST", "/v1/tokens", {"user": "dave"}, key=rk["key"])
    assert (code, body["code"]) == (403, "scope_escalation"), body
    code, body, _ = control.api("POST", "/v1/directory/sync", {"source": "nope"})
    assert (code, body["code"]) == (404, "unknown_directory")


def test_a_mass_removal_or_an_empty_read_is_refused(tmp_path_factory):
    people = [f"p{i:02d}" for i in range(20)]
    ldap = Slapd(tmp_path_factory.mktemp("slapd-guard"), "\n".join(person(p) for p in people))
    control = start(tmp_path_factory.mktemp("guard"), ldap, [("corp", "openldap", f"ou=people,{SUFFIX}")])
    try:
        assert eventually(lambda: status(control, "corp")["users"]["active"] == 20)
        p00, _ = connect(control, "p00")
        ldap.delete(*[f"uid={p},ou=people,{SUFFIX}" for p in people[:15]])
        s = synced_after(control, "corp", time.time())
        assert s["pending_removals"] == 15 and "would remove 15 of 20" in s["error"], s
        assert s["users"]["active"] == 20, "nothing changed"
        assert p00.quiet(0.2) is True and p00.disconnects.empty()
        ldap.delete(*[f"uid={p},ou=people,{SUFFIX}" for p in people[15:]])
        s = synced_after(control, "corp", time.time())
        assert "returned no users" in s["error"] and s["pending_removals"] == 20, s
        assert token(control, "p19")[0] == 200, "nobody was deprovisioned"
        # the operator confirms: applied at once
        code, body, _ = control.api("POST", "/v1/directory/sync", {"source": "corp", "confirm_removals": 20})
        assert code == 200 and body["directory"]["error"] is None, body
        assert body["directory"]["changes"]["removed"] == 20
        wait_kicked(p00, TIMEOUT)
        code, audit, _ = control.api("GET", "/v1/audit")
        actions = [e["action"] for e in audit["entries"]]
        assert "directory.sync" in actions and actions.count("directory.deprovision") == 20
    finally:
        control.kill()
        ldap.stop()


def test_ldaps_and_starttls_verify_the_server(tmp_path_factory):
    from test_mtls import Pki
    tmp = tmp_path_factory.mktemp("ldap-tls")
    ca = Pki(tmp, "ldap-ca")
    cert, key = ca.issue("slapd", "/CN=127.0.0.1", ext="server_ext")
    ldap = Slapd(tmp / "slapd", person("alice") + "\n" + person("bob"), tls=(cert, key))
    sources = [
        ("ldaps", "openldap", f"ou=people,{SUFFIX}", ldap.ldaps_url, f'ca_file = "{ca.cert}"'),
        ("starttls", "openldap", f"ou=people,{SUFFIX}", ldap.url, f'starttls = true\nca_file = "{ca.cert}"'),
        # the system's roots do not know this CA: refused, and nobody is touched
        ("untrusted", "openldap", f"ou=people,{SUFFIX}", ldap.ldaps_url, ""),
    ]
    control = start(tmp_path_factory.mktemp("tls-broker"), ldap, sources)
    try:
        for name in ("ldaps", "starttls"):
            s = eventually(lambda: (lambda s: s if s["last_success"] else None)(status(control, name)))
            assert s and s["users"]["active"] == 2, s
        s = eventually(lambda: (lambda s: s if s["error"] else None)(status(control, "untrusted")))
        assert s and s["users"]["active"] == 0 and "certificate" in s["error"].lower(), s
    finally:
        control.kill()
        ldap.stop()


def test_ten_thousand_users_sync_with_paged_searches(tmp_path_factory):
    n = 10_000
    entries = "\n".join(person(f"user{i:05d}") for i in range(n))
    entries += "\n" + "\n".join(group(f"team{t}", [f"user{i:05d}" for i in range(t, n, 10)]) for t in range(10))
    ldap = Slapd(tmp_path_factory.mktemp("slapd-10k"), entries)
    tmp = tmp_path_factory.mktemp("dir10k")
    config = directory_config(tmp, ldap, [("big", "openldap", f"ou=people,{SUFFIX}")]).read_text()
    config = config.replace("page_size = 50", "page_size = 500").replace(f"interval = {INTERVAL}", "interval = 3600")
    (tmp / "cloudsignal.toml").write_text(config)
    control = ControlBroker(tmp, extra=["--config", str(tmp / "cloudsignal.toml")])
    try:
        s = eventually(lambda: (lambda s: s if s["last_success"] else None)(status(control, "big")), timeout=120)
        assert s and s["users"]["active"] == n, s
        first = s["duration_ms"]
        # a second sync with nothing changed
        code, body, _ = control.api("POST", "/v1/directory/sync", {"source": "big"})
        again = body["directory"]
        assert code == 200 and again["changes"]["added"] == 0 and again["users"]["active"] == n
        print(f"\n[directory] {n} users, 10 groups of {n // 10}: first sync {first} ms, unchanged sync {again['duration_ms']} ms")
        code, body, _ = token(control, "user00007")
        assert body["acl"]["pub"] == ["users/user00007/#"], "team7 maps to no role"
        # a non-paged read would have stopped at the bind DN's size limit of 100
        assert first < 60_000, f"10,000 users took {first} ms (stated: under a minute)"
    finally:
        control.kill()
        ldap.stop()
