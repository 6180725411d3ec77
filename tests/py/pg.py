"""A throwaway PostgreSQL cluster for the suites: Debian's initdb and pg_ctl in a temp
directory, on a free loopback port, with a password (scram-sha-256), stopped at the end.

As root (CI containers), PostgreSQL refuses to run: the cluster then belongs to the `postgres`
user Debian's package creates, and its commands run through `runuser`."""

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

PASSWORD = "cloudsignal-test"


def pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    return shutil.which(name)


def available():
    return pg_bin("initdb") is not None and pg_bin("pg_ctl") is not None


class Postgres:
    def __init__(self, ssl=False):
        """With `ssl`, the server offers TLS with a certificate for 127.0.0.1 signed by a CA
        of its own (`self.ca`, a PEM file)."""
        from conftest import free_port
        self.dir = Path(tempfile.mkdtemp(prefix="cs-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self.run([pg_bin("initdb"), "-D", str(self.dir / "data"), "-U", "cloudsignal",
                  "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"])
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        if ssl:
            options += " " + self.certificates()
        self.run([pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w",
                  "-o", options, "start"])

    def certificates(self):
        """A CA and a server certificate for 127.0.0.1 (openssl); the server's options."""
        d = self.dir
        def ssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
        ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cloudsignal test CA")
        ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
        os.chmod(d / "server.key", 0o600)
        if self.as_root:
            for f in ("server.key", "server.pem"):
                shutil.chown(d / f, "postgres", "postgres")
        self.ca = d / "ca.pem"
        return f"-c ssl=on -c ssl_cert_file={d}/server.pem -c ssl_key_file={d}/server.key"

    def run(self, args):
        if self.as_root:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, capture_output=True, cwd="/")

    def url(self, db="postgres"):
        return f"postgres://cloudsignal:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def create_db(self):
        """A fresh database; its URL."""
        name = "cs_" + uuid.uuid4().hex[:12]
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "cloudsignal", "-d",
                        "postgres", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}"],
                       check=True, capture_output=True, env=env)
        return self.url(name)

    def sql(self, url, statement):
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        return subprocess.run(["psql", url, "-At", "-v", "ON_ERROR_STOP=1", "-c", statement],
                              capture_output=True, text=True, env=env)

    def stop(self):
        try:
            self.run([pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
