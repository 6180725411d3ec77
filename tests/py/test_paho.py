"""Eclipse paho-mqtt (a client nobody here wrote) against `cloudsignal serve`, MQTT 3.1.1 and 5:
QoS 0/1/2, retained messages, wills, a persistent session resumed after reconnect, shared
subscriptions, and the ACL's reason codes."""

import queue
import socket
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5
TIMEOUT = 5


class Client:
    """A paho client with its callbacks turned into queues."""

    def __init__(self, broker, user, protocol, client_id=None, clean=True, session_expiry=None,
                 will=None, token=None, connect=True):
        self.broker = broker
        self.protocol = protocol
        self.client_id = client_id or f"py-{uuid.uuid4().hex[:10]}"
        kwargs = {"clean_session": clean} if protocol == V311 else {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=protocol, **kwargs)
        self.c.username_pw_set(broker.username(user), token or broker.token(user))
        if will:
            topic, payload, delay = will
            props = None
            if protocol == V5 and delay:
                props = Properties(PacketTypes.WILLMESSAGE)
                props.WillDelayInterval = delay
            self.c.will_set(topic, payload, qos=1, properties=props)
        self.connacks = queue.Queue()
        self.messages = queue.Queue()
        self.subacks = queue.Queue()
        self.published = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.connacks.put((flags, rc))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put(rcs)
        self.c.on_publish = lambda c, u, mid, rc, props: self.published.put((mid, rc))
        self.clean = clean
        self.session_expiry = session_expiry
        if connect:
            self.connect()

    def connect(self):
        kwargs = {}
        if self.protocol == V5:
            props = Properties(PacketTypes.CONNECT)
            if self.session_expiry:
                props.SessionExpiryInterval = self.session_expiry
            kwargs = {"clean_start": self.clean, "properties": props}
        self.c.connect("127.0.0.1", self.broker.port, keepalive=30, **kwargs)
        self.c.loop_start()
        flags, rc = self.connacks.get(timeout=TIMEOUT)
        return flags, rc

    def subscribe(self, topic, qos=1):
        self.c.subscribe(topic, qos)
        return self.subacks.get(timeout=TIMEOUT)

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        while True:  # paho reports QoS 0 sends too; wait for this message's acknowledgement
            mid, rc = self.published.get(timeout=TIMEOUT)
            if mid == info.mid:
                return rc

    def expect(self, n=1):
        return [self.messages.get(timeout=TIMEOUT) for _ in range(n)]

    def quiet(self, seconds=0.5):
        try:
            m = self.messages.get(timeout=seconds)
            return f"unexpected message on {m.topic}: {m.payload!r}"
        except queue.Empty:
            return True

    def disconnect(self):
        self.c.disconnect()
        self.c.loop_stop()

    def drop(self):
        """Closes the socket without DISCONNECT (the will is due)."""
        self.c.loop_stop()
        self.c.socket().shutdown(socket.SHUT_RDWR)
        self.c.socket().close()


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_qos_0_1_2_round_trip(broker, protocol):
    sub = Client(broker, "alice", protocol)
    assert sub.subscribe("users/alice/inbox", qos=2) in ([2], [mqtt.ReasonCode(PacketTypes.SUBACK, identifier=2)])
    pub = Client(broker, "alice", protocol)
    for qos in (0, 1, 2):
        pub.publish("users/alice/inbox", f"q{qos}".encode(), qos=qos)
    got = sub.expect(3)
    assert [(m.payload, m.qos) for m in got] == [(b"q0", 0), (b"q1", 1), (b"q2", 2)]
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_retained_message_reaches_a_later_subscriber(broker, protocol):
    topic = f"users/bob/retained-{protocol}"
    pub = Client(broker, "bob", protocol)
    pub.publish(topic, b"last known", qos=1, retain=True)
    sub = Client(broker, "bob", protocol)
    sub.subscribe(topic)
    [m] = sub.expect()
    assert (m.payload, m.retain) == (b"last known", True)
    pub.publish(topic, b"", qos=1, retain=True)  # clears it
    late = Client(broker, "bob", protocol)
    late.subscribe(topic)
    assert late.quiet() is True
    for c in (pub, sub, late):
        c.disconnect()


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_will_on_abrupt_close_not_on_disconnect(broker, protocol):
    watcher = Client(broker, "carol", protocol)
    watcher.subscribe("users/carol/status/#")
    polite = Client(broker, "carol", protocol, will=("users/carol/status/polite", b"gone", 0))
    polite.disconnect()
    abrupt = Client(broker, "carol", protocol, will=("users/carol/status/abrupt", b"gone", 0))
    abrupt.drop()
    [m] = watcher.expect()
    assert (m.topic, m.payload) == ("users/carol/status/abrupt", b"gone")
    assert watcher.quiet() is True
    watcher.disconnect()


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_persistent_session_resumed_after_reconnect(broker, protocol):
    cid = f"durable-{protocol}"
    first = Client(broker, "dave", protocol, client_id=cid, clean=True, session_expiry=300)
    first.subscribe("users/dave/feed", qos=1)
    first.disconnect()
    if protocol == V311:
        # v3.1.1 keeps a session only for Clean Session 0: start one, then leave
        first = Client(broker, "dave", protocol, client_id=cid, clean=False)
        first.subscribe("users/dave/feed", qos=1)
        first.disconnect()
    pub = Client(broker, "dave", protocol)
    for n in range(3):
        pub.publish("users/dave/feed", f"while away {n}".encode(), qos=1)
    pub.disconnect()
    back = Client(broker, "dave", protocol, client_id=cid, clean=False, session_expiry=300, connect=False)
    flags, rc = back.connect()
    assert flags.session_present, "CONNACK Session Present"
    assert [m.payload for m in back.expect(3)] == [f"while away {n}".encode() for n in range(3)]
    back.disconnect()


def test_shared_subscription_splits_the_stream(broker):
    members = [Client(broker, "erin", V5) for _ in range(2)]
    for m in members:
        m.subscribe("$share/workers/users/erin/jobs", qos=1)
    pub = Client(broker, "erin", V5)
    for n in range(10):
        pub.publish("users/erin/jobs", f"job {n}".encode(), qos=1)
    time.sleep(0.5)
    counts = [m.messages.qsize() for m in members]
    assert sum(counts) == 10 and all(c > 0 for c in counts), counts
    for c in members + [pub]:
        c.disconnect()


def test_v5_acl_denials_carry_reason_0x87(broker):
    c = Client(broker, "frank", V5)
    [granted, denied] = c.c.subscribe([("users/frank/#", 1), ("users/+/notifications", 1)]) and c.subacks.get(timeout=TIMEOUT)
    assert granted.value == 1
    assert denied.value == 0x87, denied
    rc = c.publish("users/grace/inbox", b"not mine", qos=1)
    assert rc.value == 0x87, rc
    c.disconnect()
    assert "publish denied by ACL" in broker.logs()


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_a_forged_token_is_refused(broker, protocol):
    token = broker.token("mallory")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    c = Client(broker, "mallory", protocol, token=forged, connect=False)
    _, rc = c.connect()
    c.c.loop_stop()
    # paho reports the v3.1.1 return code 4 as its v5 equivalent, 0x86
    assert rc.value == 0x86, rc
