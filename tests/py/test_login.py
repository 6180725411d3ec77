"""People signing in (the control plane as an OAuth 2.1 authorization server for its CLI and
dashboard), and what it refuses: code replay, a wrong PKCE verifier, no PKCE, a foreign
redirect URI, a state mismatch at the CLI, a request or code older than 5 minutes, a rotated
refresh token used again, a viewer acting as an admin, a credentials file others can read.
The browser is played here over HTTP (tests/js/login.test.mjs plays it in Chromium)."""

import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import time
import urllib.parse

import pytest

from conftest import BIN, ControlBroker

PASSWORD = "correct horse battery staple"
CLI_REDIRECT = "http://127.0.0.1:{port}/callback"


def request(control, method, path, form=None, headers=None):
    """One HTTP request, redirects not followed: (status, headers, body text)."""
    c = http.client.HTTPConnection("127.0.0.1", control.api_port, timeout=10)
    body = urllib.parse.urlencode(form) if form is not None else None
    h = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    c.request(method, path, body=body, headers={**h, **(headers or {})})
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
    c.close()
    return out


def pkce():
    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_path(challenge, state="st-1", redirect=CLI_REDIRECT.format(port=5999), client="cloudsignal-cli", **extra):
    q = {"response_type": "code", "client_id": client, "redirect_uri": redirect,
         "code_challenge": challenge, "code_challenge_method": "S256", "state": state, **extra}
    return "/oauth/authorize?" + urllib.parse.urlencode({k: v for k, v in q.items() if v is not None})


def sign_in(control, email, password=PASSWORD, **kw):
    """Plays the browser: the sign-in page, then the form. Returns (verifier, redirect Location)."""
    verifier, challenge = pkce()
    status, _, html = request(control, "GET", authorize_path(challenge, **kw))
    assert status == 200, html
    req = re.search(r'name="request" value="([^"]+)"', html).group(1)
    status, headers, html = request(control, "POST", "/oauth/authorize",
                                    {"request": req, "email": email, "password": password})
    return verifier, status, headers.get("location"), html, req


def code_of(location):
    return urllib.parse.parse_qs(urllib.parse.urlparse(location).query)["code"][0]


def exchange(control, code, verifier, redirect=CLI_REDIRECT.format(port=5999), client="cloudsignal-cli"):
    status, _, body = request(control, "POST", "/oauth/token", {
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
        "client_id": client, "code_verifier": verifier})
    return status, json.loads(body)


def refresh(control, token):
    status, _, body = request(control, "POST", "/oauth/token", {
        "grant_type": "refresh_token", "refresh_token": token, "client_id": "cloudsignal-cli"})
    return status, json.loads(body)


def signed_in(control, email):
    verifier, status, location, html, _ = sign_in(control, email)
    assert status == 303, html
    status, tokens = exchange(control, code_of(location), verifier)
    assert status == 200, tokens
    return tokens


def invite(control, email, role):
    out = subprocess.run([BIN, "admin", "create-user", "--data-dir", str(control.data), "--email", email,
                          "--role", role, "--public-url", f"http://127.0.0.1:{control.api_port}"],
                         capture_output=True, text=True, check=True, env=control.offline_env())
    return re.search(r"(http://\S+/setup\?token=\S+)", out.stdout).group(1)


def accept(control, link, email=None, password=PASSWORD):
    path = link.split(str(control.api_port), 1)[1]
    status, _, html = request(control, "GET", path)
    assert status == 200, html
    token = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["token"][0]
    form = {"token": token, "name": "Test", "password": password}
    if email:
        form["email"] = email
    return request(control, "POST", "/setup", form)


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("login")
    b = ControlBroker(tmp)
    # the first owner's link was printed once at first start
    link = re.search(r"(http://\S+/setup\?token=\S+)", (tmp / f"broker-{b.port}.log").read_text()).group(1)
    status, _, html = accept(b, link, email="owner@example.test")
    assert status == 201 and "Your account is ready" in html, html
    status, _, html = request(b, "GET", link.split(str(b.api_port), 1)[1])
    assert status == 404, "a setup link works once"
    # a link for an address already taken is refused, and stays usable for the right one
    link = invite(b, "second-owner@example.test", "owner")
    b.sql("UPDATE invitations SET email = 'owner@example.test' WHERE email = 'second-owner@example.test'")
    status, _, html = accept(b, link)
    assert status == 400 and "exists already" in html, html
    assert request(b, "GET", link.split(str(b.api_port), 1)[1])[0] == 200, "the link still works"
    for email, role in [("admin@example.test", "admin"), ("viewer@example.test", "viewer")]:
        status, _, html = accept(b, invite(b, email, role))
        assert status == 201, html
    yield b
    b.kill()


def test_discovery_says_pkce_s256_only(control):
    status, _, body = request(control, "GET", "/.well-known/oauth-authorization-server")
    d = json.loads(body)
    assert status == 200 and d["code_challenge_methods_supported"] == ["S256"]
    assert d["token_endpoint"].endswith("/oauth/token") and d["grant_types_supported"] == ["authorization_code", "refresh_token"]


def test_a_person_signs_in_and_acts_as_their_role(control):
    tokens = signed_in(control, "admin@example.test")
    assert tokens["user"] == {"email": "admin@example.test", "role": "admin", "org": control.org}
    assert tokens["access_token"].startswith("csa_") and tokens["refresh_token"].startswith("csr_")
    status, body, _ = control.api("POST", "/v1/keys", {"kind": "rk", "name": "made-by-admin", "scopes": ["keys:read"]},
                                  key=tokens["access_token"])
    assert status == 201, body
    status, audit, _ = control.api("GET", "/v1/audit")
    entry = [e for e in audit["entries"] if e["action"] == "key.create"][-1]
    assert (entry["actor"], entry["actor_kind"]) == ("admin@example.test", "user"), "attributed to the person"
    status, me, _ = control.api("GET", "/v1/me", key=tokens["access_token"])
    assert me["kind"] == "person" and me["role"] == "admin"


def test_wrong_password_and_unknown_account_look_the_same(control):
    _, status, location, html, _ = sign_in(control, "admin@example.test", password="not the password!")
    assert status == 401 and location is None and "Wrong e-mail or password" in html
    _, status, _, html2, _ = sign_in(control, "nobody@example.test")
    assert status == 401 and "Wrong e-mail or password" in html2


def test_a_code_works_once_and_a_replay_revokes_its_session(control):
    verifier, status, location, _, _ = sign_in(control, "admin@example.test")
    code = code_of(location)
    status, tokens = exchange(control, code, verifier)
    assert status == 200
    status, err = exchange(control, code, verifier)
    assert (status, err["error"]) == (400, "invalid_grant")
    status, body, _ = control.api("GET", "/v1/keys", key=tokens["access_token"])
    assert (status, body["code"]) == (401, "invalid_session"), "the replayed code's session is revoked"


def test_a_wrong_verifier_is_refused(control):
    _, status, location, _, _ = sign_in(control, "admin@example.test")
    other, _ = pkce()
    status, err = exchange(control, code_of(location), other)
    assert (status, err["error"]) == (400, "invalid_grant") and "code_verifier" in err["error_description"]


def test_no_pkce_and_plain_pkce_are_refused(control):
    redirect = CLI_REDIRECT.format(port=5999)
    for challenge, method in [(None, None), ("x" * 43, "plain")]:
        path = authorize_path(challenge, code_challenge_method=method)
        if method is None:
            path = path.replace("&code_challenge_method=S256", "")
        status, headers, _ = request(control, "GET", path)
        assert status in (302, 303, 307), status
        loc = urllib.parse.urlparse(headers["location"])
        q = urllib.parse.parse_qs(loc.query)
        assert f"{loc.scheme}://{loc.netloc}{loc.path}" == redirect
        assert q["error"] == ["invalid_request"] and q["state"] == ["st-1"], q
    # and a token request without a verifier
    _, status, location, _, _ = sign_in(control, "admin@example.test")
    status, _, body = request(control, "POST", "/oauth/token", {
        "grant_type": "authorization_code", "code": code_of(location), "redirect_uri": redirect,
        "client_id": "cloudsignal-cli"})
    assert status == 400 and json.loads(body)["error"] == "invalid_request"


def test_a_foreign_redirect_uri_is_never_redirected_to(control):
    _, challenge = pkce()
    for redirect in ["https://evil.example/callback", "http://localhost:5999/callback",
                     "http://127.0.0.1:5999/elsewhere"]:
        status, headers, html = request(control, "GET", authorize_path(challenge, redirect=redirect))
        assert status == 400 and "location" not in headers and "not registered" in html, redirect
    # a code is bound to its request's redirect URI
    verifier, _, location, _, _ = sign_in(control, "admin@example.test")
    status, err = exchange(control, code_of(location), verifier, redirect=CLI_REDIRECT.format(port=6000))
    assert (status, err["error"]) == (400, "invalid_grant")


def test_requests_and_codes_older_than_five_minutes_are_refused(control):
    verifier, challenge = pkce()
    status, _, html = request(control, "GET", authorize_path(challenge))
    req = re.search(r'name="request" value="([^"]+)"', html).group(1)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", req)
    control.sql(f"UPDATE oauth_requests SET created_at = created_at - 301 WHERE id = '{req}'")
    status, headers, html = request(control, "POST", "/oauth/authorize",
                                    {"request": req, "email": "admin@example.test", "password": PASSWORD})
    assert status == 400 and "expired" in html and "location" not in headers
    # a code, five minutes after it was issued
    verifier, _, location, _, _ = sign_in(control, "admin@example.test")
    code = code_of(location)
    control.sql("UPDATE oauth_codes SET created_at = created_at - 300 WHERE used_at IS NULL")
    status, err = exchange(control, code, verifier)
    assert (status, err["error"]) == (400, "invalid_grant") and "5 minutes" in err["error_description"]
    # a request serves one sign-in only
    verifier, status, location, _, req = sign_in(control, "admin@example.test")
    assert status == 303
    status, _, html = request(control, "POST", "/oauth/authorize",
                              {"request": req, "email": "admin@example.test", "password": PASSWORD})
    assert status == 400 and "expired" in html


def test_a_rotated_refresh_token_used_again_revokes_the_session(control):
    tokens = signed_in(control, "admin@example.test")
    status, second = refresh(control, tokens["refresh_token"])
    assert status == 200 and second["refresh_token"] != tokens["refresh_token"]
    status, err = refresh(control, tokens["refresh_token"])
    assert (status, err["error"]) == (400, "invalid_grant") and "revoked" in err["error_description"]
    status, err = refresh(control, second["refresh_token"])
    assert status == 400, "the whole family is revoked, the newest token too"
    status, body, _ = control.api("GET", "/v1/keys", key=second["access_token"])
    assert status == 401


def test_a_viewer_reads_but_cannot_act(control):
    tokens = signed_in(control, "viewer@example.test")
    status, body, _ = control.api("GET", "/v1/keys", key=tokens["access_token"])
    assert status == 200
    for method, path, body in [("POST", "/v1/keys", {"kind": "rk", "name": "nope", "scopes": []}),
                               ("POST", "/v1/tokens", {"user": "alice"}),
                               ("POST", "/v1/users/alice/revoke", None),
                               ("POST", "/v1/signing-keys/rotate", None),
                               ("DELETE", "/v1/auth/sessions/ses_x", None)]:
        status, doc, _ = control.api(method, path, body, key=tokens["access_token"])
        assert (status, doc["code"]) == (403, "insufficient_scope"), (path, doc)


def test_sessions_are_listed_and_revocable_through_the_api(control):
    tokens = signed_in(control, "viewer@example.test")
    status, body, _ = control.api("GET", "/v1/auth/sessions")
    mine = [s for s in body["sessions"] if s["id"] == tokens["session"]]
    assert mine and mine[0]["email"] == "viewer@example.test" and mine[0]["client_id"] == "cloudsignal-cli"
    status, body, _ = control.api("DELETE", f"/v1/auth/sessions/{tokens['session']}")
    assert status == 200
    assert control.api("GET", "/v1/keys", key=tokens["access_token"])[0] == 401
    assert refresh(control, tokens["refresh_token"])[0] == 400
    # RFC 7009: revoking an unknown token is not an error
    assert request(control, "POST", "/oauth/revoke", {"token": "csr_unknown"})[0] == 200


def test_the_cli_refuses_a_callback_with_another_state(control, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    login = subprocess.Popen([BIN, "login", "--api", f"http://127.0.0.1:{control.api_port}", "--no-browser"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = ""
    while "oauth/authorize" not in url:
        url = login.stdout.readline()
    q = urllib.parse.parse_qs(urllib.parse.urlparse(url.strip()).query)
    port = urllib.parse.urlparse(q["redirect_uri"][0]).port
    # a forged answer (another state) at the CLI's loopback listener
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/callback?code=csc_forged&state=not-yours")
    assert c.getresponse().status == 400
    assert login.wait(10) != 0
    assert "state does not match" in login.stderr.read()
    assert not (tmp_path / ".cloudsignal" / "credentials.json").exists()


def test_the_cli_refuses_a_credentials_file_others_can_read(control, tmp_path):
    d = tmp_path / ".cloudsignal"
    d.mkdir()
    (d / "credentials.json").write_text(json.dumps({"api": "http://127.0.0.1:1", "access_token": "csa_x",
                                                     "refresh_token": "csr_x", "expires_at": 0, "session": "s", "user": {}}))
    os.chmod(d / "credentials.json", 0o644)
    out = subprocess.run([BIN, "keys", "list"], capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)})
    assert out.returncode == 3 and "readable by others" in out.stderr, out.stderr
    out = subprocess.run([BIN, "keys", "list"], capture_output=True, text=True,
                         env={**os.environ, "HOME": str(tmp_path / "nobody")})
    assert out.returncode == 3 and "cloudsignal login" in out.stderr


def test_api_key_scripts_and_exit_codes(control, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "CLOUDSIGNAL_API": f"http://127.0.0.1:{control.api_port}"}
    out = subprocess.run([BIN, "keys", "list", "--json", "--api-key", control.admin], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert any(k["name"] == "admin" for k in json.loads(out.stdout)["keys"])
    out = subprocess.run([BIN, "tokens", "issue", "--user", "alice", "--api-key", control.admin], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "password: tkn_" in out.stdout, out.stderr
    out = subprocess.run([BIN, "keys", "revoke", "nope", "--api-key", control.admin], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "key_not_found" in out.stderr
    out = subprocess.run([BIN, "whoami", "--api-key", control.admin, "--api", "http://127.0.0.1:1"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 4 and "cannot reach" in out.stderr
