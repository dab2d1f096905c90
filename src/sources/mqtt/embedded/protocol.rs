//! The rules the server applies to what a client sends, as plain functions:
//! which protocol a CONNECT asks for, how large a payload may be, which
//! topics and client ids are acceptable, and the fixed set of ways a
//! connection can go wrong. Packets themselves are read and written by
//! `rumqttc`'s codec.

use bytes::{BufMut, BytesMut};
use rumqttc::mqttbytes::v4::Connect;

/// Longest topic MQTT allows (a two-byte length).
const MAX_TOPIC: usize = u16::MAX as usize;

/// The largest *remaining length* (the packet after its fixed header) the
/// server reads. A PUBLISH of four times `max_payload` must be read whole to
/// be refused politely, whatever its topic: so 4× the payload, plus the
/// topic's length field and the longest topic, plus a packet id.
pub fn max_packet(max_payload: usize) -> usize {
    max_payload
        .saturating_mul(4)
        .saturating_add(2 + MAX_TOPIC + 2)
}

/// What to do with a PUBLISH of a given payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadSize {
    /// Up to `max_payload`: handled.
    Within,
    /// Above it, up to four times it: refused as `oversized` (counted for
    /// the device, acknowledged), the connection stays.
    Oversized,
    /// Beyond four times: the connection is dropped.
    TooLarge,
}

/// The verdict on a payload of `len` bytes under `max_payload`.
pub fn payload_size(len: usize, max_payload: usize) -> PayloadSize {
    if len <= max_payload {
        PayloadSize::Within
    } else if len <= max_payload.saturating_mul(4) {
        PayloadSize::Oversized
    } else {
        PayloadSize::TooLarge
    }
}

/// Whether a PUBLISH may carry this topic: MQTT forbids an empty topic name,
/// the wildcards `+` and `#`, and U+0000 in it.
pub fn topic_ok(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether the client id is acceptable: an empty one only with a clean
/// session (MQTT 3.1.1, 3.1.3-8), as the server would have nothing to keep
/// a session under.
pub fn client_id_ok(connect: &Connect) -> bool {
    connect.clean_session || !connect.client_id.is_empty()
}

/// The protocol a CONNECT asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// Anything else (MQTT 5 is `MQTT` level 5): CONNACK 1.
    Unsupported,
}

/// The length of a packet's fixed header: one byte of type and flags, then
/// one to four bytes of remaining length, each but the last with its top
/// bit set.
fn fixed_header_len(frame: &[u8]) -> Option<usize> {
    (1..=4).find_map(|i| match frame.get(i) {
        Some(b) if b & 0x80 == 0 => Some(Some(i + 1)),
        Some(_) => None,
        None => Some(None),
    })?
}

/// The protocol name and level at the start of a CONNECT's variable header.
fn name_and_level(frame: &[u8]) -> Option<(&[u8], u8)> {
    let at = fixed_header_len(frame)?;
    let len = usize::from(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    let name = frame.get(at + 2..at + 2 + len)?;
    let level = *frame.get(at + 2 + len)?;
    Some((name, level))
}

/// The protocol a complete CONNECT packet (`frame`, fixed header included)
/// asks for; `None` if it is too short to say. `rumqttc`'s codec reads only
/// `MQTT` and fails on MQTT 3.1's `MQIsdp`, so this is looked at first.
pub fn version(frame: &[u8]) -> Option<Version> {
    Some(match name_and_level(frame)? {
        (b"MQTT", 4) => Version::V311,
        (b"MQIsdp", 3) => Version::V31,
        _ => Version::Unsupported,
    })
}

/// A 3.1 CONNECT rewritten as the equivalent 3.1.1 one, so that the codec
/// can read it: the two differ only in the protocol name and level (3.1.1
/// kept the flags, keep-alive and payload layout of 3.1). `None` unless
/// `frame` is a whole 3.1 CONNECT.
pub fn v31_as_v311(frame: &[u8]) -> Option<BytesMut> {
    if version(frame)? != Version::V31 {
        return None;
    }
    // Fixed header, name length (2), "MQIsdp" (6), level (1).
    let rest = frame.get(fixed_header_len(frame)? + 2 + 6 + 1..)?;
    let header = 2 + 4 + 1;
    let mut out = BytesMut::with_capacity(5 + header + rest.len());
    out.put_u8(*frame.first()?);
    let mut remaining = header + rest.len();
    loop {
        // Seven bits at a time, low first, the top bit saying "more".
        let byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining == 0 {
            out.put_u8(byte);
            break;
        }
        out.put_u8(byte | 0x80);
    }
    out.put_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4]);
    out.put_slice(rest);
    Some(out)
}

/// Why a connection was closed by the server: the `kind` label of
/// `fixgate_mqtt_broker_errors_total`. A fixed set, so that no label is
/// ever made from what a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A packet the codec cannot read.
    Malformed,
    /// A payload beyond four times `max_payload`, or a packet beyond
    /// [`max_packet`].
    TooLarge,
    /// A packet a client must not send (a second CONNECT, a first packet
    /// that is not CONNECT, an ack for a message the server never sent).
    UnexpectedPacket,
    /// A protocol other than MQTT 3.1.1 or 3.1 (answered CONNACK 1).
    ProtocolVersion,
    /// An empty client id without a clean session (answered CONNACK 2).
    ClientId,
    /// A PUBLISH to an empty topic or one with wildcards.
    BadTopic,
    /// More QoS 2 messages awaiting their PUBREL than `mqtt.max_inflight`.
    Inflight,
    /// No CONNECT within `mqtt.connection_timeout`.
    ConnectTimeout,
    /// No packet within 1.5 times the client's keep-alive.
    KeepAlive,
    /// A large packet that did not arrive whole in time.
    PacketTimeout,
    /// The socket failed, or the client stopped reading its acks.
    Io,
    /// Accepting a connection failed (out of file descriptors, say).
    Accept,
}

impl Fault {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::UnexpectedPacket => "unexpected_packet",
            Self::ProtocolVersion => "protocol_version",
            Self::ClientId => "client_id",
            Self::BadTopic => "bad_topic",
            Self::Inflight => "inflight",
            Self::ConnectTimeout => "connect_timeout",
            Self::KeepAlive => "keep_alive",
            Self::PacketTimeout => "packet_timeout",
            Self::Io => "io",
            Self::Accept => "accept",
        }
    }

    /// Whether it is worth a warning (once a minute per kind): a client
    /// breaking the protocol, or the server short of resources. Silence and
    /// broken sockets are what a flaky fleet produces all day; they are
    /// counted and logged at DEBUG only.
    pub fn loud(self) -> bool {
        !matches!(
            self,
            Self::ConnectTimeout | Self::KeepAlive | Self::PacketTimeout | Self::Io
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::{Login, Packet};

    #[test]
    fn four_times_the_limit_is_refused_and_beyond_it_dropped() {
        assert_eq!(payload_size(0, 4096), PayloadSize::Within);
        assert_eq!(payload_size(4096, 4096), PayloadSize::Within);
        assert_eq!(payload_size(4097, 4096), PayloadSize::Oversized);
        assert_eq!(payload_size(4 * 4096, 4096), PayloadSize::Oversized);
        assert_eq!(payload_size(4 * 4096 + 1, 4096), PayloadSize::TooLarge);
        // Room for the longest topic: a 4× payload is always read whole.
        assert_eq!(max_packet(4096), 4 * 4096 + 4 + 65_535);
        assert_eq!(max_packet(usize::MAX), usize::MAX);
    }

    #[test]
    fn publish_topics_have_no_wildcards() {
        assert!(topic_ok("fleet/x/device/bus-1/fix"));
        assert!(topic_ok("/"));
        assert!(!topic_ok(""));
        assert!(!topic_ok("fleet/+/fix"));
        assert!(!topic_ok("fleet/#"));
        assert!(!topic_ok("a\0b"));
    }

    #[test]
    fn an_empty_client_id_needs_a_clean_session() {
        let mut connect = Connect::new("");
        assert!(client_id_ok(&connect));
        connect.clean_session = false;
        assert!(!client_id_ok(&connect));
        connect.client_id = "bus-1".into();
        assert!(client_id_ok(&connect));
    }

    fn encoded(connect: Connect) -> BytesMut {
        let mut out = BytesMut::new();
        Packet::Connect(connect)
            .write(&mut out, usize::MAX)
            .expect("encode");
        out
    }

    /// A 3.1 CONNECT made from a 3.1.1 one: the same but for name and level.
    fn as_v31(v311: &[u8]) -> Vec<u8> {
        let at = fixed_header_len(v311).expect("header");
        let rest = &v311[at + 7..];
        let mut body = vec![0, 6];
        body.extend_from_slice(b"MQIsdp");
        body.push(3);
        body.extend_from_slice(rest);
        let mut out = vec![v311[0]];
        let mut n = body.len();
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn connect_versions_are_told_apart_and_3_1_is_read_as_3_1_1() {
        let mut connect = Connect::new("tracker-7");
        connect.keep_alive = 30;
        connect.login = Some(Login::new("bus-1", "s3cret-pass"));
        let v311 = encoded(connect.clone());
        assert_eq!(version(&v311), Some(Version::V311));
        assert_eq!(v31_as_v311(&v311), None);

        let v31 = as_v31(&v311);
        assert_eq!(version(&v31), Some(Version::V31));
        let mut again = v31_as_v311(&v31).expect("a 3.1 CONNECT");
        assert_eq!(&again[..], &v311[..]);
        match Packet::read(&mut again, 1024) {
            Ok(Packet::Connect(read)) => assert_eq!(read, connect),
            other => panic!("{other:?}"),
        }

        // A long one: the remaining length takes two bytes in either form.
        let long = Connect::new("x".repeat(300));
        let v311 = encoded(long);
        let v31 = as_v31(&v311);
        assert_eq!(v31_as_v311(&v31).as_deref(), Some(&v311[..]));

        let mut v5 = encoded(Connect::new("new"));
        let at = fixed_header_len(&v5).expect("header");
        v5[at + 6] = 5;
        assert_eq!(version(&v5), Some(Version::Unsupported));
        assert_eq!(version(&[0x10, 0x80]), None, "cut short");
        assert_eq!(version(&[0x10, 0x02, 0x00]), None);
        assert_eq!(version(&[0x10, 0x80, 0x80, 0x80, 0x80, 0x01]), None);
    }

    #[test]
    fn fault_kinds_are_a_fixed_set_of_labels() {
        assert_eq!(Fault::TooLarge.as_str(), "too_large");
        assert!(Fault::Malformed.loud());
        assert!(!Fault::KeepAlive.loud());
    }
}
