"""A real OpenLDAP server (Debian's slapd) on loopback, with its own data, for the directory
sync suites.

The tree (`dc=example,dc=test`):

- `ou=people`: inetOrgPerson users (`uid`, `mail`, `entryUUID` from slapd), the OpenLDAP preset;
- `ou=groups`: groupOfNames groups with `member` DNs;
- `ou=ad`: Active Directory-style users, loaded with OpenLDAP's own copy of AD's schema
  (msuser.schema: the `user` class, `sAMAccountName`, `userAccountControl`, binary
  `objectGUID`, `memberOf`), the active-directory preset;
- `cn=sync`: the bind DN the broker syncs as. Its size limit is 100 entries per search, so
  only a paged search reads a larger directory whole.

The data is loaded with `slapadd` before slapd starts; changes during a test go through
`ldapmodify`/`ldapdelete` (Debian's ldap-utils) as an administrator would make them.
"""

import base64
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from conftest import free_port

SUFFIX = "dc=example,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "admin-secret"
SYNC_DN = f"cn=sync,{SUFFIX}"
SYNC_PW = "sync-secret"
SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"


def person(uid, cn=None):
    cn = cn or uid.capitalize()
    return (f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\n"
            f"sn: {cn}\nmail: {uid}@example.test\n")


def group(cn, members):
    lines = [f"dn: cn={cn},ou=groups,{SUFFIX}", "objectClass: groupOfNames", f"cn: {cn}"]
    lines += [f"member: uid={m},ou=people,{SUFFIX}" for m in members]
    return "\n".join(lines) + "\n"


def ad_user(sam, groups=(), disabled=False):
    """An AD `user` object: 512 is NORMAL_ACCOUNT, 514 adds ACCOUNTDISABLE (bit 2)."""
    guid = base64.b64encode(uuid.uuid5(uuid.NAMESPACE_DNS, sam).bytes_le).decode()
    lines = [f"dn: cn={sam.capitalize()} Doe,ou=ad,{SUFFIX}", "objectClass: user", "objectClass: extensibleObject",
             f"cn: {sam.capitalize()} Doe", "sn: Doe", "instanceType: 4", "nTSecurityDescriptor:: AQA=",
             f"objectCategory: CN=Person,CN=Schema,CN=Configuration,{SUFFIX}",
             f"sAMAccountName: {sam}", f"userAccountControl: {514 if disabled else 512}",
             f"objectGUID:: {guid}", f"mail: {sam}@corp.example.test", f"displayName: {sam.capitalize()} Doe"]
    lines += [f"memberOf: CN={g},OU=Groups,{SUFFIX.upper()}" for g in groups]
    return "\n".join(lines) + "\n"


def ad_guid(sam):
    """The objectGUID of `ad_user(sam)` as AD tools print it."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, sam))


class Slapd:
    def __init__(self, tmp: Path, entries: str, tls=None):
        """`tls`: (certificate, key) PEM files: StartTLS on `url`, and `ldaps_url`."""
        self.tmp = tmp
        self.db = tmp / "db"
        self.db.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{free_port()}" if tls else None
        tls_conf = f"TLSCertificateFile {tls[0]}\nTLSCertificateKeyFile {tls[1]}\n" if tls else ""
        self.conf = tmp / "slapd.conf"
        self.conf.write_text(tls_conf + f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/msuser.schema
pidfile {tmp}/slapd.pid
argsfile {tmp}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 1073741824
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {self.db}
index objectClass eq
index uid eq
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="{SYNC_DN}" read by * none
limits dn.exact="{SYNC_DN}" size.soft=100 size.hard=100 size.prtotal=unlimited
""")
        base = (f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n"
                f"dn: {SYNC_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: sync\n"
                f"userPassword: {SYNC_PW}\n\n"
                + "".join(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
                          for ou in ("people", "groups", "ad", "empty")))
        ldif = tmp / "data.ldif"
        ldif.write_text(base + entries)
        out = subprocess.run([SLAPADD, "-f", str(self.conf), "-l", str(ldif), "-q"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        self.start()

    def start(self):
        self.log = open(self.tmp / "slapd.log", "a")
        urls = f"{self.url}/" + (f" {self.ldaps_url}/" if self.ldaps_url else "")
        self.proc = subprocess.Popen([SLAPD, "-f", str(self.conf), "-h", urls, "-d", "0"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("slapd did not start: " + (self.tmp / "slapd.log").read_text())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def _tool(self, tool, ldif_or_args):
        args = [tool, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PW]
        if isinstance(ldif_or_args, str):
            out = subprocess.run(args, input=ldif_or_args, capture_output=True, text=True, timeout=30)
        else:
            out = subprocess.run(args + list(ldif_or_args), capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def modify(self, ldif: str):
        return self._tool("ldapmodify", ldif)

    def add(self, ldif: str):
        return self._tool("ldapadd", ldif)

    def delete(self, *dns):
        return self._tool("ldapdelete", dns)

    def password_file(self) -> Path:
        p = self.tmp / "bind.secret"
        if not p.exists():
            p.write_text(SYNC_PW + "\n")
            os.chmod(p, 0o600)
        return p
