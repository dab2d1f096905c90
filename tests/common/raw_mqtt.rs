//! A deliberately plain MQTT 3.1.1 client over a blocking socket, for tests
//! that must see exactly what the broker answers: the CONNACK return code,
//! each PUBACK, a SUBACK's failure codes, the moment a connection is dropped.
//! Packets are built and read with `rumqttc`'s codec, not by hand.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, Publish, Subscribe,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};

/// Largest packet the client reads (acks only, in practice).
const MAX_IN: usize = 1024 * 1024;

/// One connection to a broker.
pub struct RawMqtt {
    stream: TcpStream,
    buf: BytesMut,
    next_pkid: u16,
}

/// How a wait for a packet ended.
#[derive(Debug)]
pub enum Next {
    /// A packet arrived.
    Packet(Packet),
    /// Nothing within the time given.
    Timeout,
    /// The broker closed the connection (EOF or reset).
    Closed,
}

impl RawMqtt {
    /// Opens a TCP connection and sends CONNECT; returns the connection and
    /// the CONNACK's code (`None` if the broker closed without one).
    pub fn connect(
        port: u16,
        client_id: &str,
        login: Option<(&str, &str)>,
    ) -> (RawMqtt, Option<ConnectReturnCode>) {
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 60;
        if let Some((user, pass)) = login {
            connect.login = Some(Login::new(user, pass));
        }
        Self::connect_with(port, connect)
    }

    /// [`RawMqtt::connect`] with a CONNECT of the caller's making.
    pub fn connect_with(port: u16, connect: Connect) -> (RawMqtt, Option<ConnectReturnCode>) {
        let mut raw = Self::open(port);
        raw.send(Packet::Connect(connect));
        let code = match raw.next(Duration::from_secs(10)) {
            Next::Packet(Packet::ConnAck(ConnAck { code, .. })) => Some(code),
            Next::Packet(other) => panic!("expected CONNACK, got {other:?}"),
            Next::Timeout => panic!("no CONNACK within 10 s"),
            Next::Closed => None,
        };
        (raw, code)
    }

    /// A bare TCP connection, nothing sent yet.
    pub fn open(port: u16) -> RawMqtt {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the broker");
        stream.set_nodelay(true).expect("nodelay");
        RawMqtt {
            stream,
            buf: BytesMut::with_capacity(4096),
            next_pkid: 1,
        }
    }

    /// Writes one packet; false if the connection is gone.
    pub fn send(&mut self, packet: Packet) -> bool {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).expect("encode packet");
        self.write_raw(&out)
    }

    /// Writes bytes as they are; false if the connection is gone.
    pub fn write_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// A fresh packet id (1…65535, wrapping).
    pub fn pkid(&mut self) -> u16 {
        let id = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        id
    }

    /// Publishes `payload` to `topic`; returns the packet id (0 at QoS 0).
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Option<u16> {
        let mut publish = Publish::new(topic, qos, payload.to_vec());
        publish.retain = retain;
        if qos != QoS::AtMostOnce {
            publish.pkid = self.pkid();
        }
        let pkid = publish.pkid;
        self.send(Packet::Publish(publish)).then_some(pkid)
    }

    /// Publishes at QoS 1 and waits for its PUBACK; false if none came.
    pub fn publish_acked(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some(pkid) = self.publish(topic, payload, QoS::AtLeastOnce, false) else {
            return false;
        };
        self.wait_puback(pkid, Duration::from_secs(10))
    }

    /// Waits for the PUBACK of `pkid`, skipping other packets.
    pub fn wait_puback(&mut self, pkid: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Next::Packet(Packet::PubAck(ack)) if ack.pkid == pkid => return true,
                Next::Packet(_) => {}
                Next::Timeout | Next::Closed => return false,
            }
        }
    }

    /// Subscribes to `filter` and returns the SUBACK's packet.
    pub fn subscribe(&mut self, filters: &[&str]) -> Option<Packet> {
        let pkid = self.pkid();
        let mut subscribe = Subscribe::new(filters[0], QoS::AtLeastOnce);
        for f in &filters[1..] {
            subscribe.add((*f).to_owned(), QoS::AtLeastOnce);
        }
        subscribe.pkid = pkid;
        if !self.send(Packet::Subscribe(subscribe)) {
            return None;
        }
        match self.next(Duration::from_secs(10)) {
            Next::Packet(p) => Some(p),
            _ => None,
        }
    }

    /// The next packet from the broker, waiting up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            match Packet::read(&mut self.buf, MAX_IN) {
                Ok(packet) => return Next::Packet(packet),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(err) => panic!("the broker sent a malformed packet: {err}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Timeout;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Next::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Next::Timeout;
                }
                Err(_) => return Next::Closed,
            }
        }
    }

    /// Whether the broker closes the connection within `timeout` (packets
    /// that arrive meanwhile are skipped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Next::Closed => return true,
                Next::Timeout => return false,
                Next::Packet(_) => {}
            }
        }
    }

    /// A second handle on the socket, for a reader thread.
    pub fn try_clone(&self) -> RawMqtt {
        RawMqtt {
            stream: self.stream.try_clone().expect("clone socket"),
            buf: BytesMut::with_capacity(4096),
            next_pkid: 1,
        }
    }
}
