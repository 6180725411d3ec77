"""Cluster mode over a real nats-server (JetStream on): three `cloudsignal serve` nodes on
loopback. Node A runs the control plane (tokens, revocations); B and C are broker nodes that
trust A's keys, and every node joins the cluster with --cluster-nats. Real paho-mqtt and
mosquitto clients check what crosses nodes: QoS 0/1/2 counted and in order, overlapping
filters delivered once, retained messages (also to a node that starts later), shared
subscriptions balanced across nodes, client-id takeover across nodes (0x8E), a revocation on A
closing a session on C (0x98) within 100 ms, a node killed with SIGKILL forgotten by the others,
and the cluster recovering by itself after nats-server restarts."""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BIN, ControlBroker, free_port
from paho_client import TIMEOUT, V311, V5, Client, eventually

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
pytestmark = pytest.mark.skipif(
    not os.path.exists(NATS) and not os.environ.get("CI"),
    reason="nats-server is not installed (cargo xtask bootstrap installs it)",
)


def wait_port(port, proc, what, log):
    deadline = time.monotonic() + 60  # a loaded CI machine is slow, never wrong
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start: " + Path(log).read_text())


class Nats:
    """A throwaway nats-server with JetStream, its store in the test's temp directory."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.start()

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        self.log = self.tmp / "nats.log"
        self.proc = subprocess.Popen(
            [NATS, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.tmp / "js")],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "nats-server", self.log)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# every node a test starts, stopped when the module's cluster is (even after a failed test)
STARTED = []


class Node:
    """A broker node (no control plane) trusting node A's keys."""

    def __init__(self, tmp: Path, name: str, a: ControlBroker, nats: Nats):
        self.tmp, self.name, self.a, self.nats = tmp, name, a, nats
        self.port = free_port()
        STARTED.append(self)
        self.start()

    def start(self):
        self.logfile = self.tmp / f"node-{self.name}.log"
        api = f"http://127.0.0.1:{self.a.api_port}"
        self.proc = subprocess.Popen(
            [BIN, "serve", "--mqtt-addr", f"127.0.0.1:{self.port}", "--ws-addr", "off",
             "--control-addr", "off", "--data-dir", str(self.tmp / f"data-{self.name}"),
             "--issuer", api, "--issuer-jwks", f"{api}/.well-known/jwks.json",
             "--issuer-org", self.a.org, "--issuer-revocations", "off",
             "--auth-failure-delay-ms", "100", "--cluster-nats", self.nats.url,
             "--cluster-peer-timeout", "3"],
            stdout=open(self.logfile, "a"), stderr=subprocess.STDOUT,
            env={**os.environ, "CLOUDSIGNAL_LOG": "info"})
        wait_port(self.port, self.proc, f"node {self.name}", self.logfile)

    # the Client helper asks its broker for tokens and usernames: node A issues them
    def token(self, user, **kw):
        return token(self.a, user, **kw)

    def username(self, user):
        return f"{user}@{self.a.org}"

    def logs(self):
        return self.logfile.read_text()

    def kill(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


def token(a, user, pub=("#",), sub=("#",)):
    status, body, _ = a.api("POST", "/v1/tokens", {"user": user, "ttl": 600,
                                                   "acl": {"pub": list(pub), "sub": list(sub)}})
    assert status == 200, body
    return body["mqtt_credentials"]["password"]


class NodeA:
    """Node A's MQTT side, for the Client helper (tokens from its control plane)."""

    def __init__(self, a):
        self.a, self.port = a, a.port

    def token(self, user, **kw):
        return token(self.a, user, **kw)

    def username(self, user):
        return f"{user}@{self.a.org}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    nats = Nats(tmp)
    a = ControlBroker(tmp, extra=["--cluster-nats", nats.url, "--cluster-peer-timeout", "3"])
    b = Node(tmp, "b", a, nats)
    c = Node(tmp, "c", a, nats)
    nodes = {"a": NodeA(a), "b": b, "c": c}
    # every node knows the two others before a test starts
    for n in (b, c):
        assert eventually(lambda: n.logs().count("cluster: node joined") >= 2), n.logs()
    yield {"nats": nats, "control": a, **nodes, "tmp": tmp}
    for n in STARTED:
        n.kill()
    a.kill()
    nats.stop()


def mosquitto_sub(node, user, topic, count, qos=1, extra=()):
    return subprocess.Popen(
        ["mosquitto_sub", "-p", str(node.port), "-u", node.username(user), "-P", node.token(user),
         "-t", topic, "-q", str(qos), "-C", str(count), "-W", "30", "-v", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def await_route(sub, pub, topic):
    """A SUBACK is local; the route then travels to the other nodes. Probes `topic` from `pub`
    until `sub` receives one (a deadline, not a sleep), then drains the probes."""
    def probe():
        pub.c.publish(topic, b"__probe__", qos=0)
        try:
            return sub.messages.get(timeout=0.2).payload == b"__probe__"
        except Exception:
            return False
    assert eventually(probe, 20), f"no route to {topic}"
    drain_probes(sub, 0.3)


def drain_probes(sub, quiet):
    """Takes the probes `sub` received until it has been quiet for `quiet` seconds."""
    while True:
        try:
            m = sub.messages.get(timeout=quiet)
        except Exception:
            return
        assert m.payload == b"__probe__", m.payload


def test_publishers_on_b_and_c_reach_a_subscriber_on_a_at_every_qos(cluster):
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    sub = Client(a, "sub-all", V5)
    assert sub.subscribe("x/#", qos=2)[0].value == 2
    n = 100
    pubs = {"b": Client(b, "pub-b", V5), "c": Client(c, "pub-c", V311)}
    for p in pubs.values():
        await_route(sub, p, "x/probe")
    for qos in (0, 1, 2):
        for name, p in pubs.items():
            for i in range(n):
                p.c.publish(f"x/{name}/{qos}", f"{i}", qos=qos)
    got = {}
    for m in sub.expect(n * 2 * 3):
        got.setdefault(m.topic, []).append(int(m.payload))
    for qos in (0, 1, 2):
        for name in pubs:
            # all of them, once each, in the order they were published [MQTT-4.6.0-6]
            assert got[f"x/{name}/{qos}"] == list(range(n)), (name, qos)
    assert sub.quiet(0.5) is True


def test_overlapping_filters_on_one_node_get_one_copy(cluster):
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    sub = Client(c, "overlap", V5)
    for f in ("o/#", "o/+", "o/b"):
        sub.subscribe(f)
    for node in (a, b):
        await_route(sub, Client(node, "o-probe", V5), "o/b")
    # published from other nodes with mosquitto_pub, a client nobody here wrote
    for i in range(10):
        node = b if i < 5 else a
        subprocess.run(["mosquitto_pub", "-p", str(node.port), "-u", node.username("p"),
                        "-P", node.token("p"), "-t", "o/b", "-m", f"m{i}", "-q", "1"], check=True)
    got = [m.payload.decode() for m in sub.expect(10)]
    assert got == [f"m{i}" for i in range(10)]
    # three matching filters, one copy each [MQTT-3.3.4-2]: nothing more arrives
    assert sub.quiet(1) is True


def retained_on(node, topic):
    """The retained message a new subscriber on `node` gets for `topic`, or None."""
    s = Client(node, "ret-check", V5)
    s.subscribe(topic)
    try:
        m = s.messages.get(timeout=0.5)
        return (m.payload, m.retain)
    except Exception:
        return None
    finally:
        s.disconnect()


def test_retained_messages_reach_every_node_and_a_node_started_later(cluster):
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    p = Client(b, "ret-pub", V5)
    assert p.publish("ret/one", b"kept", qos=1, retain=True) == 0
    for node in (a, c):
        assert eventually(lambda: retained_on(node, "ret/#"), 10) == (b"kept", True)
    d = Node(cluster["tmp"], "d", cluster["control"], cluster["nats"])
    try:
        # a node that joined later has it too (from the JetStream bucket)
        assert eventually(lambda: retained_on(d, "ret/#"), 10) == (b"kept", True)
        # cleared on A: gone on D too
        Client(a, "ret-clear", V5).publish("ret/one", b"", qos=1, retain=True)
        assert eventually(lambda: retained_on(d, "ret/#") is None, 10)
        assert retained_on(c, "ret/#") is None
    finally:
        d.kill()


def test_shared_subscriptions_are_balanced_across_nodes(cluster):
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    members = [Client(a, "worker-a", V5), Client(c, "worker-c", V5)]
    for m in members:
        m.subscribe("$share/workers/jobs/#")
    p = Client(b, "jobs-pub", V5)
    # a plain observer on each member's node, subscribed after it: once B routes to the
    # observer, it knows the member's route too (a node's route changes arrive in order)
    observers = [Client(a, "observer-a", V5), Client(c, "observer-c", V5)]
    for o in observers:
        o.subscribe("jobs/#")
        await_route(o, p, "jobs/probe")
    for m in members:  # the probes went to the group too
        while not m.messages.empty():
            assert m.messages.get().payload == b"__probe__"
    plain = observers[1]
    n = 100
    for i in range(n):
        p.c.publish(f"jobs/{i}", str(i), qos=1)
    assert len(plain.expect(n)) == n, "a plain subscriber beside the group gets everything"
    counts = []
    seen = set()
    for m in members:
        got = []
        while True:
            try:
                got.append(int(m.messages.get(timeout=1).payload))
            except Exception:
                break
        counts.append(len(got))
        seen.update(got)
    # each message to exactly one member of the group, and both nodes' members get a share
    assert sum(counts) == n and seen == set(range(n)), counts
    assert min(counts) >= n // 4, counts


def test_the_cluster_api_shows_the_nodes_and_the_traffic_and_only_to_the_operator(cluster):
    control, a, b = cluster["control"], cluster["a"], cluster["b"]
    # traffic both ways between A and B
    on_a, on_b = Client(a, "api-a", V5), Client(b, "api-b", V5)
    on_a.subscribe("api/#")
    on_b.subscribe("api/#")
    await_route(on_b, on_a, "api/to-b")
    await_route(on_a, on_b, "api/to-a")
    status, body, _ = control.api("GET", "/v1/cluster")
    assert status == 200, body
    c = body["cluster"]
    assert c["name"] == "cloudsignal" and c["connected"] is True
    assert len(c["peers"]) >= 2 and c["node"] not in c["peers"]
    assert c["sent"] > 0 and c["received"] > 0 and c["dropped"] == 0 and c["malformed"] == 0, c
    # a key without sessions:read is refused
    status, rk, _ = control.api("POST", "/v1/keys", {"kind": "rk", "name": "no-sessions", "scopes": ["keys:read"]})
    assert status == 201, rk
    assert control.api("GET", "/v1/cluster", key=rk["key"])[0] == 403
    # another org's admin key: the figures are server-wide, so not theirs to read
    out = subprocess.run([BIN, "admin", "create-org", "--data-dir", str(control.data), "--name", "tenant"],
                         env=control.offline_env(), check=True, capture_output=True, text=True).stdout
    other = next(line.strip() for line in out.splitlines() if line.strip().startswith("sk_"))
    status, body, _ = control.api("GET", "/v1/cluster", key=other)
    assert (status, body["code"]) == (403, "operator_only"), body


def test_a_client_id_taken_over_on_another_node_is_closed_0x8e(cluster):
    a, b = cluster["a"], cluster["b"]
    first = Client(a, "roamer", V5, client_id="roamer-1")
    first.subscribe("users/roamer/#")
    second = Client(b, "roamer", V5, client_id="roamer-1")
    rc = first.disconnects.get(timeout=TIMEOUT)
    assert rc.value == 0x8E, rc
    # the second connection is the live one, and the first's subscription is gone from A
    assert second.c.is_connected()
    assert "session taken over on another node" in cluster["a"].a.logs()


def test_another_users_client_id_is_not_taken_over_across_nodes(cluster):
    a, c = cluster["a"], cluster["c"]
    victim = Client(a, "victim", V5, client_id="shared-id")
    Client(c, "mallory", V5, client_id="shared-id")
    # client ids are scoped to their identity: Mallory's CONNECT ends nothing of the victim's
    assert victim.quiet(1) is True
    assert victim.c.is_connected()


def test_a_revocation_on_a_closes_a_session_on_c_within_100_ms(cluster):
    a, c, control = cluster["a"], cluster["c"], cluster["control"]
    lags = []
    for i in range(3):
        user = f"revoked-{i}"
        old = token(control, user)
        s = Client(c, user, V5, token=old)
        s.subscribe(f"users/{user}/#")
        t0 = time.monotonic()
        status, _, _ = control.api("POST", f"/v1/users/{user}/revoke")
        answered = time.monotonic()
        assert status == 200
        rc = s.disconnects.get(timeout=TIMEOUT)
        closed = time.monotonic()
        assert rc.value == 0x98, rc
        lags.append(((answered - t0) * 1000, (closed - answered) * 1000))
        # B heard it too (B polls no feed): the revoked token cannot come back there. B applies
        # the broadcast on its own, so a CONNECT racing it is retried until the deadline.
        def refused_on_b():
            again = Client(cluster["b"], user, V5, token=old, connect=False)
            _, rc = again.connect()
            if rc.value == 0:
                again.disconnect()
            else:
                again.c.loop_stop()
            return rc.value == 0x86
        assert eventually(refused_on_b, 10), "B refuses the revoked token"
    print("revocation (API answer ms, then C closed ms):", lags)
    # the API answers after A applied it; C closes one NATS hop later
    assert min(l[1] for l in lags) < 100, lags

def test_a_node_killed_with_sigkill_is_forgotten_and_its_clients_reconnect_elsewhere(cluster):
    tmp, control, nats = cluster["tmp"], cluster["control"], cluster["nats"]
    a = cluster["a"]
    e = Node(tmp, "e", control, nats)
    s = Client(e, "kill9", V5, client_id="kill9-sub")
    s.subscribe("k9/#")
    e.kill(signal.SIGKILL)
    assert eventually(lambda: "it stopped beating" in control.logs(), 15), control.logs()
    # the client comes back on A and gets messages published from B
    s2 = Client(a, "kill9", V5, client_id="kill9-sub")
    s2.subscribe("k9/#")
    time.sleep(0.3)
    Client(cluster["b"], "k9-pub", V5).publish("k9/x", b"after", qos=1)
    assert s2.expect(1)[0].payload == b"after"


def test_the_cluster_recovers_by_itself_after_nats_restarts(cluster):
    a, b, c, nats = cluster["a"], cluster["b"], cluster["c"], cluster["nats"]
    sub = Client(a, "through-restart", V5)
    sub.subscribe("nr/#")
    nats.stop()
    time.sleep(1)
    nats.start()
    # nodes reconnect, resubscribe and re-announce their routes: no test step helps them
    p = Client(b, "nr-pub", V5)

    def delivered():
        p.publish("nr/x", b"back", qos=1)
        try:
            return sub.messages.get(timeout=0.5).payload == b"back"
        except Exception:
            return False
    assert eventually(delivered, 30)
    # retained messages kept in JetStream survive the restart; another node has a copy once
    # its watch of the bucket delivers it (milliseconds: a deadline, not a sleep)
    Client(c, "nr-ret", V5).publish("nr/kept", b"r", qos=1, retain=True)

    def retained_on_b():
        s = Client(b, "nr-ret-sub", V5)
        s.subscribe("nr/kept")
        try:
            return s.messages.get(timeout=0.5).payload == b"r"
        except Exception:
            return False
        finally:
            s.disconnect()
    assert eventually(retained_on_b, 10)


def test_two_control_planes_on_one_postgresql_store_act_as_one(cluster, tmp_path):
    """Nodes P and Q both run a control plane on one PostgreSQL database (and join the NATS
    cluster): a key created on P works on Q, its revocation on P closes its session on Q and
    Q's cached verification goes with it, tokens issued on either node verify on the other, and
    usage from both nodes adds up in the shared store."""
    import conftest
    from test_control import key_client, new_key
    db = conftest.postgres().create_db()
    public = f"http://127.0.0.1:{free_port()}"
    common = ["--cluster-nats", cluster["nats"].url, "--cluster-name", "shared",
              "--public-url", public, "--cluster-peer-timeout", "3"]
    (tmp_path / "p").mkdir()
    p = ControlBroker(tmp_path / "p", extra=common, database=db)
    q_data = tmp_path / "q" / "data"
    q_data.mkdir(parents=True)
    # the store has keys already, so Q writes no admin key file of its own: the test uses P's
    (q_data / "admin.key").write_text((p.data / "admin.key").read_text())
    os.chmod(q_data / "admin.key", 0o600)
    q = ControlBroker(tmp_path / "q", data_dir=q_data, extra=common, database=db)
    try:
        assert q.org == p.org, "one store, one org"
        # a key made on P connects on Q (Q reads it from the shared store)
        rk = new_key(p, "rk", ["mqtt:publish:shared/#", "mqtt:subscribe:shared/#"])
        on_q = key_client(q, rk)
        on_q.subscribe("shared/#")
        # revoked on P: Q closes the session (0x98) and refuses the key from then on
        status, _, _ = p.api("DELETE", f"/v1/keys/{rk['id']}")
        assert status == 200
        assert on_q.disconnects.get(timeout=TIMEOUT).value == 0x98
        again = key_client(q, rk, connect=False)
        _, rc = again.connect()
        again.c.loop_stop()
        assert rc.value == 0x86, "Q's cached verification of the key was dropped"
        # tokens from either node verify on both (each node trusts the keys the store publishes)
        for issuer, other in ((q, p), (p, q)):
            status, body, _ = issuer.api("POST", "/v1/tokens", {"user": "both", "ttl": 600})
            creds = body["mqtt_credentials"]

            def connects():
                c = Client(other, "both", V5, username=creds["username"], token=creds["password"],
                           connect=False)
                _, rc = c.connect()
                if rc.value == 0:
                    c.disconnect()  # usage is counted when the connection ends
                else:
                    c.c.loop_stop()
                return rc.value == 0
            assert eventually(connects, 30), "a token from the other node is trusted"
        # usage from both nodes adds up in the shared store
        def both_counted():
            status, doc, _ = p.api("GET", "/v1/usage")
            users = {u["subject"]: u for u in doc.get("users", [])} if status == 200 else {}
            u = users.get(f"both@{p.org}")
            return u if u and u["connects"] >= 2 else None
        assert eventually(both_counted, 30), ("connects on P and on Q are both counted", p.api("GET", "/v1/usage")[1])
    finally:
        q.kill()
        p.kill()


def cluster_status(control):
    status, body, _ = control.api("GET", "/v1/cluster")
    assert status == 200, body
    return body["cluster"]


def await_logged(control, pub, sub, topic):
    """A persistent session's subscription reaches the session registry within a few hundred
    ms of its SUBACK; until then a publisher's node does not know to log what it wants. Probes
    `topic` from `pub` (on node A, whose API counts logged messages) until a probe is logged,
    then drains the probes from `sub`."""
    def logged():
        before = cluster_status(control)["logged"]
        pub.publish(topic, b"__probe__", qos=1)
        return cluster_status(control)["logged"] > before
    assert eventually(logged, 20), f"{topic} is never logged"
    drain_probes(sub, 0.5)


def received(sub, into, quiet=1.0):
    """Moves what `sub` received into `into` (payloads as ints, probes skipped) until it has
    been quiet for `quiet` seconds."""
    while True:
        try:
            m = sub.messages.get(timeout=quiet)
        except Exception:
            return into
        if m.payload != b"__probe__":
            into.append(int(m.payload))


def test_persistent_sessions_survive_kill_9_of_their_node_with_nothing_acknowledged_lost(cluster):
    tmp, control, nats, a, b = (cluster[k] for k in ("tmp", "control", "nats", "a", "b"))
    e = Node(tmp, "e-durable", control, nats)
    assert eventually(lambda: e.logs().count("cluster: node joined") >= 3), e.logs()
    # a v5 session at QoS 1 and a v3.1.1 one (Clean Session 0) at QoS 2, held by node E
    kinds = {"v5": (V5, 1), "v311": (V311, 2)}
    subs = {}
    for name, (proto, qos) in kinds.items():
        s = Client(e, f"dur-{name}", proto, client_id=f"dur-{name}", clean=False,
                   session_expiry=600 if proto == V5 else None)
        assert s.subscribe(f"dur/{name}/#", qos=qos)[0].value == qos
        subs[name] = s
    pub = Client(a, "dur-pub", V5)
    for name, s in subs.items():
        await_logged(control, pub, s, f"dur/{name}/probe")
    n, acked, got = 300, {k: [] for k in kinds}, {k: [] for k in kinds}
    killed, resumed = threading.Event(), threading.Event()

    def publish_all():
        for i in range(n):
            for name, (_, qos) in kinds.items():
                if pub.publish(f"dur/{name}/m", str(i).encode(), qos=qos) == 0:
                    acked[name].append(i)
            if i == 100:
                killed.wait(30)
            if i == 180:
                resumed.wait(30)
            time.sleep(0.002)
    t = threading.Thread(target=publish_all)
    t.start()
    assert eventually(lambda: len(acked["v311"]) > 100, 30)
    e.kill(signal.SIGKILL)
    for name, s in subs.items():
        s.c.loop_stop()
        received(s, got[name], quiet=0.2)
    killed.set()
    # messages 101..180 are published (and acknowledged) while the clients are away
    assert eventually(lambda: len(acked["v311"]) > 180, 30)
    # the clients come back on another node, publishing goes on meanwhile
    back = {}
    for name, (proto, qos) in kinds.items():
        c = Client(b, f"dur-{name}", proto, client_id=f"dur-{name}", clean=False,
                   session_expiry=600 if proto == V5 else None)
        assert c.session_present, f"{name}: the session is resumed (Session Present 1)"
        back[name] = c
    resumed.set()
    t.join(60)
    assert not t.is_alive()
    for name, c in back.items():
        received(c, got[name], quiet=2.0)
        lost = sorted(set(acked[name]) - set(got[name]))
        duplicates = len(got[name]) - len(set(got[name]))
        print(f"{name}: {len(acked[name])} acknowledged to the publisher, {len(got[name])} "
              f"received ({duplicates} again after the node loss), lost {lost}")
        assert len(acked[name]) == n, "every publish was acknowledged"
        assert lost == [], f"{name}: acknowledged messages lost: {lost}"
    assert "resuming a session another node held" in b.logs()


def test_a_persistent_session_moves_to_another_live_node_and_keeps_its_messages(cluster):
    a, b, c, control = cluster["a"], cluster["b"], cluster["c"], cluster["control"]
    first = Client(b, "mover", V5, client_id="mover-1", clean=False, session_expiry=600)
    first.subscribe("mv/#")
    pub = Client(a, "mv-pub", V5)
    await_logged(control, pub, first, "mv/probe")
    got = []
    for i in range(50):
        assert pub.publish("mv/x", str(i).encode()) == 0
    received(first, got, quiet=0.5)
    first.disconnect()
    # published while the client is away: kept for it in the log
    for i in range(50, 100):
        assert pub.publish("mv/x", str(i).encode()) == 0
    time.sleep(0.5)  # the session's cursor reaches the registry (every 200 ms)
    second = Client(c, "mover", V5, client_id="mover-1", clean=False, session_expiry=600)
    received(second, got, quiet=2.0)
    assert sorted(set(got)) == list(range(100)), sorted(set(range(100)) - set(got))
    # taken over while live (0x8E on the old node), the session goes on on the new one
    third = Client(a, "mover", V5, client_id="mover-1", clean=False, session_expiry=600)
    assert second.disconnects.get(timeout=TIMEOUT).value == 0x8E
    assert pub.publish("mv/x", b"100") == 0
    assert [int(m.payload) for m in third.expect(1)] == [100]
    # another identity using the same client id resumes nothing of it
    mallory = Client(c, "mallory", V5, client_id="mover-1", clean=False, session_expiry=600)
    assert pub.publish("mv/x", b"101") == 0
    assert mallory.quiet(1) is True
    assert [int(m.payload) for m in third.expect(1)] == [101]
    third.disconnect()
    # Clean Start on another node ends the session: its record goes
    recorded = cluster_status(control)["recorded_sessions"]
    fresh = Client(b, "mover", V5, client_id="mover-1", clean=True)
    assert fresh.session_present is False
    fresh.disconnect()
    assert eventually(lambda: cluster_status(control)["recorded_sessions"] == recorded - 1, 10)
    again = Client(c, "mover", V5, client_id="mover-1", clean=False)
    assert again.session_present is False
    assert pub.publish("mv/x", b"102") == 0
    assert again.quiet(0.5) is True
