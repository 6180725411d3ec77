"""A paho-mqtt client wrapped for tests: callbacks become queues."""

import queue
import socket
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5
TIMEOUT = 5


def eventually(check, timeout=30):
    """Polls `check()` until it returns something truthy (returned) or `timeout` seconds pass
    (then the last value is returned, for the caller's assertion): a deadline, not a timing
    assumption, so a loaded machine is slower but never wrong."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class Client:
    """A paho client with its callbacks turned into queues."""

    def __init__(self, broker, user, protocol, client_id=None, clean=True, session_expiry=None,
                 will=None, token=None, connect=True, username=None, port=None, bind="", transport="tcp"):
        self.broker = broker
        self.protocol = protocol
        # "" asks the broker to assign one (v5)
        self.client_id = client_id if client_id is not None else f"py-{uuid.uuid4().hex[:10]}"
        kwargs = {"clean_session": clean} if protocol == V311 else {}
        # no background reconnects: a test decides when a client comes back
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=protocol, reconnect_on_failure=False, transport=transport, **kwargs)
        self.port = port or broker.port
        self.c.username_pw_set(username or broker.username(user), token or broker.token(user))
        self.disconnects = queue.Queue()
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(rc)
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
        self.bind = bind
        if connect:
            self.connect()

    def connect(self):
        kwargs = {}
        if self.protocol == V5:
            props = Properties(PacketTypes.CONNECT)
            if self.session_expiry:
                props.SessionExpiryInterval = self.session_expiry
            kwargs = {"clean_start": self.clean, "properties": props}
        self.c.connect("127.0.0.1", self.port, keepalive=30, bind_address=self.bind, **kwargs)
        self.c.loop_start()
        flags, rc = self.connacks.get(timeout=TIMEOUT)
        self.session_present = bool(flags.session_present)
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
