"""Eclipse paho-mqtt (a client nobody here wrote) against `cloudsignal serve`, MQTT 3.1.1 and 5:
QoS 0/1/2, retained messages, wills, a persistent session resumed after reconnect, shared
subscriptions, and the ACL's reason codes."""


import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes

from paho_client import TIMEOUT, V311, V5, Client, eventually


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
    eventually(lambda: sum(m.messages.qsize() for m in members) >= 10)
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
