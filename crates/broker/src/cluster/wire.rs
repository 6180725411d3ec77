//! What nodes of a cluster send each other, as bytes (sans-IO: no socket, no clock).
//!
//! - **Messages** go to the node that holds subscribers for them, on the subject
//!   `{cluster}.n.{node}.{tenant}.{topic levels…}`. The tenant and the topic's levels are NATS
//!   tokens, escaped ([`token`]) because NATS forbids `.`, `*`, `>`, white space and empty
//!   tokens, all of which MQTT allows; so `nats sub '{cluster}.n.*.org_x.sensors.>'` watches an
//!   org's traffic and NATS permissions can fence a tenant. The body ([`Frame`]) says which
//!   subscribers the message is for (plain, and which shared groups) and carries the MQTT 5
//!   PUBLISH ([`cloudsignal_core::session::wire`]).
//! - **Control** (`{cluster}.ctl`, JSON, rare): who is alive, who subscribes to what,
//!   revocations, takeovers ([`Control`]).

use cloudsignal_core::revocation::Entry;
use cloudsignal_core::session::wire::{decode_message, encode_message, WireError};
use cloudsignal_core::session::Message;
use cloudsignal_core::topic::{TopicFilter, TopicName};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// A node's id: random at every start, so a restarted node is a new node.
pub type NodeId = u64;

/// Appends `s` as one NATS subject token: ASCII letters, digits, `-` and `_` stay; every other
/// byte is `%XX`; the empty string is `%` (no escape is that short), so the mapping is one to
/// one and never yields `.`, `*`, `>`, white space or an empty token.
pub fn token(s: &str, out: &mut String) {
    if s.is_empty() {
        out.push('%');
        return;
    }
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The subject of a message for `node`: `{cluster}.n.{node}.{tenant}.{level}.{level}…`.
pub fn message_subject(cluster: &str, node: NodeId, tenant: &str, topic: &TopicName) -> String {
    subject(&format!("{cluster}.n.{node:016x}"), tenant, topic)
}

/// The subject of a message in the cluster's message log: `{cluster}.log.{tenant}.{level}…`.
pub fn log_subject(cluster: &str, tenant: &str, topic: &TopicName) -> String {
    subject(&format!("{cluster}.log"), tenant, topic)
}

/// The subject of a log entry holding several messages (`!` is never in an escaped token, so
/// no tenant's subject is this one).
pub fn log_batch_subject(cluster: &str) -> String {
    format!("{cluster}.log.!batch")
}

/// What the message log's stream holds.
pub fn log_subjects(cluster: &str) -> String {
    format!("{cluster}.log.>")
}

fn subject(prefix: &str, tenant: &str, topic: &TopicName) -> String {
    let mut s = String::with_capacity(prefix.len() + 2 + tenant.len() + topic.as_str().len());
    s.push_str(prefix);
    s.push('.');
    token(tenant, &mut s);
    for level in topic.levels() {
        s.push('.');
        token(level, &mut s);
    }
    s
}

/// What a node subscribes to for its messages.
pub fn inbox_subject(cluster: &str, node: NodeId) -> String {
    format!("{cluster}.n.{node:016x}.>")
}

/// The control subject.
pub fn control_subject(cluster: &str) -> String {
    format!("{cluster}.ctl")
}

const VERSION: u8 = 1;

/// A message for one node, and which of its subscribers get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The publisher's tenant.
    pub tenant: String,
    /// Deliver to the node's matching plain subscriptions.
    pub plain: bool,
    /// The message is in the cluster's message log: persistent sessions get it from there
    /// (see [`super::durable`]), not from this frame.
    pub logged: bool,
    /// Shared groups (name, filter) the node was picked for.
    pub groups: Vec<(String, String)>,
    /// The message.
    pub message: Message,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its header says, or an unknown version.
    #[error("malformed frame")]
    Malformed,
    /// A name is not UTF-8, or a filter is not a filter.
    #[error("malformed frame: bad tenant, group or filter")]
    Name,
    /// The message inside.
    #[error(transparent)]
    Message(#[from] WireError),
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// Encodes a frame: version, flags (bit 0: plain, bit 1: logged), tenant, groups, then the
/// PUBLISH.
pub fn encode_frame(
    tenant: &str,
    (plain, logged): (bool, bool),
    groups: &[(&str, &TopicFilter)],
    message: &Message,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + tenant.len() + message.payload.len() + 64);
    out.push(VERSION);
    out.push(u8::from(plain) | (u8::from(logged) << 1));
    put_str(tenant, &mut out);
    let n = u16::try_from(groups.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    for (g, f) in groups.iter().take(usize::from(n)) {
        put_str(g, &mut out);
        put_str(f.as_str(), &mut out);
    }
    encode_message(message, &mut out);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<usize, FrameError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> Result<usize, FrameError> {
        let b = self.take(4)?;
        usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .map_err(|_| FrameError::Malformed)
    }
    fn str(&mut self) -> Result<String, FrameError> {
        let n = self.u16()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError::Name)
    }
}

/// Decodes a frame whose message is at most `max` bytes.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Frame, FrameError> {
    let mut r = Reader(buf);
    let head = r.take(2)?;
    if head[0] != VERSION {
        return Err(FrameError::Malformed);
    }
    let plain = head[1] & 1 == 1;
    let logged = head[1] & 2 == 2;
    let tenant = r.str()?;
    let n = r.u16()?;
    let mut groups = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let g = r.str()?;
        let f = r.str()?;
        TopicFilter::parse(&f).map_err(|_| FrameError::Name)?;
        groups.push((g, f));
    }
    let message = decode_message(r.0, max)?;
    Ok(Frame {
        tenant,
        plain,
        logged,
        groups,
        message,
    })
}

/// The first byte of a log entry holding several frames (a frame's is [`VERSION`]).
const BATCH: u8 = 0xB1;

/// Encodes log entry holding `frames` (encoded with [`encode_frame`]): the frame itself when
/// there is one; else a batch: [`BATCH`], a count (u32), then each frame's length (u32) and
/// bytes.
pub fn encode_log_entry(frames: &[Vec<u8>]) -> Vec<u8> {
    if let [one] = frames {
        return one.clone();
    }
    let len: usize = frames.iter().map(|f| f.len() + 4).sum();
    let mut out = Vec::with_capacity(5 + len);
    out.push(BATCH);
    out.extend_from_slice(&(frames.len() as u32).to_be_bytes());
    for f in frames {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Decodes a log entry (one frame, or a batch) whose messages are at most `max` bytes each.
pub fn decode_log_entry(buf: &[u8], max: usize) -> Result<Vec<Frame>, FrameError> {
    if buf.first() != Some(&BATCH) {
        return Ok(vec![decode_frame(buf, max)?]);
    }
    let mut r = Reader(&buf[1..]);
    let count = r.u32()?;
    let mut frames = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let n = r.u32()?;
        frames.push(decode_frame(r.take(n)?, max)?);
    }
    if !r.0.is_empty() {
        return Err(FrameError::Malformed);
    }
    Ok(frames)
}

/// One filter gained or lost by a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteChange {
    /// The tenant.
    pub tenant: String,
    /// The shared group, for `$share/{group}/…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The filter.
    pub filter: String,
    /// Gained (`true`) or lost.
    pub gained: bool,
}

/// What nodes tell each other on the control subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// A node (re)connected: every other node sends its whole route set.
    Hello {
        /// The sender.
        node: NodeId,
    },
    /// A node is alive; `version` counts the route changes it has sent.
    Beat {
        /// The sender.
        node: NodeId,
        /// Its route version.
        version: u64,
    },
    /// A node is leaving (graceful shutdown): forget its routes now.
    Bye {
        /// The sender.
        node: NodeId,
    },
    /// A node's filters: its whole set (`reset`: forget what it said before) or changes.
    Routes {
        /// The sender.
        node: NodeId,
        /// The sender's route version after these changes.
        version: u64,
        /// These replace the node's routes (the first part of a whole set).
        reset: bool,
        /// The changes.
        changes: Vec<RouteChange>,
    },
    /// A node lost track of `to`'s routes: `to` sends its whole set again.
    Resync {
        /// The sender.
        node: NodeId,
        /// Who should send.
        to: NodeId,
    },
    /// A revocation applied on `node`: every node applies it.
    Revoke {
        /// The sender.
        node: NodeId,
        /// The revocation.
        entry: Entry,
    },
    /// `node` took over the session of `client_id` of `owner`: others end theirs.
    Takeover {
        /// The sender.
        node: NodeId,
        /// The identity's owner key.
        owner: String,
        /// The client id.
        client_id: String,
    },
}

impl Control {
    /// The node that sent it.
    pub fn node(&self) -> NodeId {
        match self {
            Self::Hello { node }
            | Self::Beat { node, .. }
            | Self::Bye { node }
            | Self::Routes { node, .. }
            | Self::Resync { node, .. }
            | Self::Revoke { node, .. }
            | Self::Takeover { node, .. } => *node,
        }
    }
}

/// The key of a retained message in the cluster's key-value bucket: a digest of tenant and
/// topic (key names are restricted; the value carries both).
pub fn retained_key(tenant: &str, topic: &str) -> String {
    digest(tenant, topic)
}

/// The session registry's key of the session of `client_id` of `owner` (hex SHA-256).
pub fn session_key(owner: &str, client_id: &str) -> String {
    digest(owner, client_id)
}

/// Hex SHA-256 of `a`, a zero byte, then `b`.
fn digest(a: &str, b: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(a.as_bytes());
    h.update([0]);
    h.update(b.as_bytes());
    let mut s = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A retained message as the bucket keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedValue {
    /// The node that stored it.
    pub node: NodeId,
    /// When (Unix seconds): a node that reads it later counts its Message Expiry from here.
    pub at: u64,
    /// The tenant.
    pub tenant: String,
    /// The message (an empty payload clears the topic).
    pub message: Message,
}

impl RetainedValue {
    /// The message as a node reading it at `now` (Unix seconds) should keep it: its Message
    /// Expiry Interval reduced by the time it spent in the bucket; `None` once expired
    /// [MQTT-3.3.2-5].
    pub fn at(self, now: u64) -> Option<(String, Message)> {
        let mut message = self.message;
        if let Some(e) = message.expiry {
            let spent = u32::try_from(now.saturating_sub(self.at)).unwrap_or(u32::MAX);
            message.expiry = Some(e.checked_sub(spent).filter(|left| *left > 0)?);
        }
        Some((self.tenant, message))
    }
}

/// A retained message's value in the bucket: node, time, tenant, then the PUBLISH.
pub fn encode_retained(node: NodeId, at: u64, tenant: &str, message: &Message) -> Vec<u8> {
    let mut out = node.to_be_bytes().to_vec();
    out.extend_from_slice(&at.to_be_bytes());
    put_str(tenant, &mut out);
    encode_message(message, &mut out);
    out
}

fn u64_at(r: &mut Reader<'_>) -> Result<u64, FrameError> {
    let mut b = [0u8; 8];
    b.copy_from_slice(r.take(8)?);
    Ok(u64::from_be_bytes(b))
}

/// Decodes [`encode_retained`].
pub fn decode_retained(buf: &[u8], max: usize) -> Result<RetainedValue, FrameError> {
    let mut r = Reader(buf);
    let node = u64_at(&mut r)?;
    let at = u64_at(&mut r)?;
    let tenant = r.str()?;
    Ok(RetainedValue {
        node,
        at,
        tenant,
        message: decode_message(r.0, max)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cloudsignal_core::mqtt::QoS;
    use proptest::prelude::*;

    /// NATS's own rule for a published subject: non-empty tokens without `.`, `*`, `>` or
    /// white space.
    fn valid_subject(s: &str) -> bool {
        s.split('.')
            .all(|t| !t.is_empty() && !t.chars().any(|c| c == '*' || c == '>' || c.is_whitespace()))
    }

    fn message(topic: &str) -> Message {
        Message {
            topic: TopicName::parse(topic).unwrap(),
            payload: b"hi".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: false,
            expiry: None,
            forwarded: Default::default(),
        }
    }

    #[test]
    fn subjects_escape_what_nats_forbids() {
        let t = TopicName::parse("a.b/ /*/>//$SYS/%/é").unwrap();
        let s = message_subject("cs", 1, "", &t);
        assert_eq!(
            s,
            "cs.n.0000000000000001.%.a%2Eb.%20.%2A.%3E.%.%24SYS.%25.%C3%A9"
        );
        assert!(valid_subject(&s));
        assert_eq!(inbox_subject("cs", 1), "cs.n.0000000000000001.>");
        assert_eq!(log_subject("cs", "o", &t)[..10], *"cs.log.o.a");
    }

    #[test]
    fn frames_round_trip_and_refuse_garbage() {
        let f = TopicFilter::parse("a/+").unwrap();
        let bytes = encode_frame("org_x", (true, false), &[("g", &f)], &message("a/b"));
        let frame = decode_frame(&bytes, 1 << 20).unwrap();
        assert_eq!(frame.tenant, "org_x");
        assert!(frame.plain && !frame.logged);
        let logged = encode_frame("", (false, true), &[], &message("a/b"));
        let logged = decode_frame(&logged, 1 << 20).unwrap();
        assert!(!logged.plain && logged.logged);
        assert_eq!(frame.groups, vec![("g".to_owned(), "a/+".to_owned())]);
        assert_eq!(frame.message, message("a/b"));
        for cut in 0..bytes.len() {
            assert!(decode_frame(&bytes[..cut], 1 << 20).is_err(), "{cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode_frame(&bad, 1 << 20).is_err());
    }

    #[test]
    fn log_entries_hold_one_frame_or_a_batch() {
        let one = encode_frame("t", (true, true), &[], &message("a"));
        assert_eq!(encode_log_entry(std::slice::from_ref(&one)), one);
        let got = decode_log_entry(&one, 1 << 20).unwrap();
        assert_eq!(got.len(), 1);
        let two = encode_frame("u", (true, true), &[], &message("b"));
        let batch = encode_log_entry(&[one, two]);
        let got = decode_log_entry(&batch, 1 << 20).unwrap();
        let topics: Vec<(&str, &str)> = got
            .iter()
            .map(|f| (f.tenant.as_str(), f.message.topic.as_str()))
            .collect();
        assert_eq!(topics, [("t", "a"), ("u", "b")]);
        for cut in 0..batch.len() {
            assert!(decode_log_entry(&batch[..cut], 1 << 20).is_err(), "{cut}");
        }
        let mut long = batch.clone();
        long.push(0);
        assert!(decode_log_entry(&long, 1 << 20).is_err(), "trailing bytes");
    }

    #[test]
    fn retained_values_round_trip_and_age() {
        let v = encode_retained(7, 100, "org_x", &message("a"));
        let r = decode_retained(&v, 1 << 20).unwrap();
        assert_eq!((r.node, r.at, r.tenant.as_str()), (7, 100, "org_x"));
        assert_eq!(r.clone().at(5_000), Some(("org_x".into(), message("a"))));
        let expiring = Message {
            expiry: Some(60),
            ..message("a")
        };
        let r = decode_retained(&encode_retained(7, 100, "t", &expiring), 1 << 20).unwrap();
        assert_eq!(
            r.clone().at(130).unwrap().1.expiry,
            Some(30),
            "30 s spent in the bucket"
        );
        assert_eq!(
            r.clone().at(160),
            None,
            "expired while stored [MQTT-3.3.2-5]"
        );
        assert_eq!(
            r.at(90).unwrap().1.expiry,
            Some(60),
            "a clock behind counts nothing"
        );
        assert_ne!(retained_key("a", "b/c"), retained_key("a/b", "c"));
        assert_eq!(retained_key("", "x").len(), 64);
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let c = Control::Takeover {
            node: 1,
            owner: "o".into(),
            client_id: "c".into(),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"kind\":\"takeover\""), "{json}");
        assert_eq!(serde_json::from_str::<Control>(&json).unwrap(), c);
        assert_eq!(c.node(), 1);
    }

    proptest! {
        /// Distinct topics never share a subject, and every subject is one NATS accepts.
        #[test]
        fn escaping_is_one_to_one_and_valid(
            a in "[a-z./ *>%$_-]{0,6}(/[a-z./ *>%$_-]{0,6}){0,3}",
            b in "[a-z./ *>%$_-]{0,6}(/[a-z./ *>%$_-]{0,6}){0,3}",
            tenant in "[a-z_.]{0,5}",
        ) {
            prop_assume!(!a.is_empty() && !b.is_empty());
            let (ta, tb) = (TopicName::parse(&a).unwrap(), TopicName::parse(&b).unwrap());
            let (sa, sb) = (message_subject("c", 2, &tenant, &ta), message_subject("c", 2, &tenant, &tb));
            prop_assert!(valid_subject(&sa));
            prop_assert_eq!(a == b, sa == sb);
        }

        #[test]
        fn frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_frame(&bytes, 1 << 20);
            let _ = decode_retained(&bytes, 1 << 20);
            let _ = decode_log_entry(&bytes, 1 << 20);
        }
    }
}
