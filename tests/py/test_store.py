"""The PostgreSQL store over TLS: a throwaway cluster that offers TLS with a certificate from a
CA of its own. With that CA (`--database-ca-file`) and `sslmode=require` the control plane
works; without it (the public web roots) the certificate is refused and the node does not
start — verification cannot be turned off — and the password never appears in what it prints."""

import os
import subprocess

import pytest

from conftest import BIN, ControlBroker, free_port
from pg import PASSWORD, Postgres, available

pytestmark = pytest.mark.skipif(not available() and not os.environ.get("CI"),
                                reason="PostgreSQL is not installed (cargo xtask bootstrap installs it)")


@pytest.fixture(scope="module")
def tls_pg():
    pg = Postgres(ssl=True)
    yield pg
    pg.stop()


def test_tls_with_the_servers_ca_works(tls_pg, tmp_path):
    url = tls_pg.create_db() + "?sslmode=require"
    b = ControlBroker(tmp_path, extra=["--database-ca-file", str(tls_pg.ca)], database=url)
    try:
        status, body, _ = b.api("POST", "/v1/tokens", {"user": "over-tls"})
        assert status == 200, body
        # the connection really is TLS: PostgreSQL says so for this database's sessions
        out = tls_pg.sql(tls_pg.url("postgres") + "?sslmode=require",
                         "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                         f"WHERE s.ssl AND a.datname = '{url.rsplit('/', 1)[1].split('?')[0]}'")
        assert out.returncode == 0 and int(out.stdout.strip()) >= 1, out.stdout + out.stderr
        assert PASSWORD not in b.logs()
    finally:
        b.kill()


def test_a_certificate_from_an_unknown_ca_is_refused(tls_pg, tmp_path):
    url = tls_pg.create_db()  # sslmode=prefer: TLS is offered, so it is used, and verified
    out = subprocess.run(
        [BIN, "serve", "--mqtt-addr", f"127.0.0.1:{free_port()}", "--ws-addr", "off",
         "--control-addr", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"),
         "--database-url", url],
        capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "connecting to PostgreSQL at postgres://…@127.0.0.1" in said, said
    assert "certificate" in said.lower(), said
    assert PASSWORD not in said, "the password is never printed"
