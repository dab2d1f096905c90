//! Reads `[uplink]`: the transport (MQTT or HTTP) and the batching and retry
//! settings shared by both.

use std::time::Duration;

use super::{Reader, Section};
use crate::config::{Uplink, UplinkHttp, UplinkMqtt, UplinkTransport};
use crate::tls::ClientCert;

/// Keys that apply whatever the transport.
const COMMON: &[&str] = &[
    "transport",
    "max_records",
    "max_age",
    "backlog_rate",
    "max_in_flight",
    "ack_timeout",
    "retry_min",
    "retry_max",
];
/// TLS keys both transports take.
const TLS: &[&str] = &["ca_file", "cert_file", "key_file"];
const MQTT_ONLY: &[&str] = &[
    "host",
    "port",
    "tls",
    "username",
    "password",
    "client_id",
    "topic",
    "keep_alive",
];
const HTTP_ONLY: &[&str] = &["url", "token", "timeout"];

/// Every key `[uplink]` may hold.
pub(super) fn uplink_keys() -> Vec<&'static str> {
    [COMMON, TLS, MQTT_ONLY, HTTP_ONLY].concat()
}

impl Reader<'_> {
    pub(super) fn uplink(&mut self, s: &Section<'_, '_>) -> Uplink {
        let mut up = Uplink::default();
        let kind = match self.string(s, "transport") {
            None => "off",
            Some((text @ ("mqtt" | "http" | "off"), _)) => text,
            Some((text, span)) => {
                self.report(
                    &span,
                    format!(
                        "{} must be \"mqtt\", \"http\" or \"off\", not {text:?}",
                        s.key("transport")
                    ),
                );
                "off"
            }
        };
        let foreign: Vec<&str> = match kind {
            "mqtt" => HTTP_ONLY.to_vec(),
            "http" => MQTT_ONLY.to_vec(),
            _ => [TLS, MQTT_ONLY, HTTP_ONLY].concat(),
        };
        for key in foreign {
            if let Some(value) = s.get(key) {
                self.report(
                    &value.span(),
                    format!(
                        "{} does not apply with uplink.transport = {kind:?}",
                        s.key(key)
                    ),
                );
            }
        }
        up.transport = match kind {
            "mqtt" => UplinkTransport::Mqtt(self.uplink_mqtt(s)),
            "http" => self
                .uplink_http(s)
                .map_or(UplinkTransport::Off, UplinkTransport::Http),
            _ => UplinkTransport::Off,
        };
        if let Some(n) = self.integer(s, "max_records", 1..=100_000) {
            up.max_records = n;
        }
        let age = Duration::from_millis(10)..=Duration::from_secs(3600);
        if let Some((d, _)) = self.duration(s, "max_age", age) {
            up.max_age = d;
        }
        if let Some(n) = self.integer(s, "backlog_rate", 1..=10_000_000) {
            up.backlog_rate = n;
        }
        if let Some(n) = self.integer(s, "max_in_flight", 1..=1000) {
            up.max_in_flight = n;
        }
        let timeout = Duration::from_millis(100)..=Duration::from_secs(3600);
        if let Some((d, _)) = self.duration(s, "ack_timeout", timeout.clone()) {
            up.ack_timeout = d;
        }
        if let Some((d, _)) = self.duration(s, "retry_min", timeout.clone()) {
            up.retry_min = d;
        }
        if let Some((d, span)) = self.duration(s, "retry_max", timeout) {
            if d < up.retry_min {
                self.report(
                    &span,
                    format!(
                        "{} must not be shorter than {}",
                        s.key("retry_max"),
                        s.key("retry_min")
                    ),
                );
            } else {
                up.retry_max = d;
            }
        }
        up
    }

    fn uplink_mqtt(&mut self, s: &Section<'_, '_>) -> UplinkMqtt {
        let mut m = UplinkMqtt {
            broker: self.mqtt_broker(s),
            client_cert: self.client_cert(s),
            ..UplinkMqtt::default()
        };
        if !m.broker.tls {
            for key in TLS {
                if let Some(value) = s.get(key) {
                    self.report(
                        &value.span(),
                        format!("{} needs {} = true", s.key(key), s.key("tls")),
                    );
                }
            }
        }
        if let Some((topic, span)) = self.string(s, "topic") {
            if topic.is_empty() || topic.contains(['+', '#']) {
                self.report(
                    &span,
                    format!(
                        "{} must be a topic name without wildcards, not {topic:?}",
                        s.key("topic")
                    ),
                );
            } else {
                m.topic = topic.to_owned();
            }
        }
        m
    }

    fn uplink_http(&mut self, s: &Section<'_, '_>) -> Option<UplinkHttp> {
        if !self.require(s, "url") {
            return None;
        }
        let (url, span) = self.string(s, "url")?;
        let tls = url.starts_with("https://");
        if !tls && !url.starts_with("http://") {
            self.report(
                &span,
                format!(
                    "{} must start with http:// or https://, not {url:?}",
                    s.key("url")
                ),
            );
            return None;
        }
        if !tls {
            for key in TLS {
                if let Some(value) = s.get(key) {
                    self.report(
                        &value.span(),
                        format!("{} needs an https:// {}", s.key(key), s.key("url")),
                    );
                }
            }
        }
        let mut timeout = Duration::from_secs(30);
        let range = Duration::from_millis(100)..=Duration::from_secs(600);
        if let Some((d, _)) = self.duration(s, "timeout", range) {
            timeout = d;
        }
        Some(UplinkHttp {
            url: url.to_owned(),
            token: self.string(s, "token").map(|(t, _)| t.to_owned()),
            ca_file: self.path(s, "ca_file").map(|(p, _)| p),
            client_cert: self.client_cert(s),
            timeout,
        })
    }

    /// `cert_file` and `key_file`, which come as a pair.
    fn client_cert(&mut self, s: &Section<'_, '_>) -> Option<ClientCert> {
        match (self.path(s, "cert_file"), self.path(s, "key_file")) {
            (Some((cert, _)), Some((key, _))) => Some(ClientCert { cert, key }),
            (Some((_, span)), None) => {
                self.report(
                    &span,
                    format!("{} needs {} too", s.key("cert_file"), s.key("key_file")),
                );
                None
            }
            (None, Some((_, span))) => {
                self.report(
                    &span,
                    format!("{} needs {} too", s.key("key_file"), s.key("cert_file")),
                );
                None
            }
            (None, None) => None,
        }
    }
}
