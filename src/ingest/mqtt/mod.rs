//! MQTT intake: devices publish to the gateway's own MQTT server
//! ([`embedded`]) or to an existing broker ([`external`]); either way each
//! message goes through [`Messages::handle`]: topic → device, payload →
//! fixes → pipeline.

pub mod embedded;
pub mod external;

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;

use super::clock::ClockTrust;
use super::intake::{NmeaDevices, Rejects, deliver};
use super::payload::{self, Limits, Parsed};
use super::stream::PipelineClosed;
use crate::config::Topic;
use crate::fix::{DeviceId, Observed, SourceKind};
use crate::groups::Groups;
use crate::health::Pulse;
use crate::log_limit::{OUTSIDE_CHARS, outside};

/// Turns MQTT messages into fixes; owned by the one task that receives them.
#[derive(Debug)]
pub struct Messages {
    topics: Vec<Topic>,
    limits: Limits,
    nmea: NmeaDevices,
    rejects: Arc<Rejects>,
    tx: mpsc::Sender<Observed>,
    pulse: Option<Arc<Pulse>>,
    groups: Option<Arc<Groups>>,
}

impl Messages {
    /// A handler for `topics`, sending to `tx`.
    pub fn new(
        topics: Vec<Topic>,
        max_payload: usize,
        trust: ClockTrust,
        max_devices: usize,
        rejects: Arc<Rejects>,
        tx: mpsc::Sender<Observed>,
    ) -> Self {
        Self {
            topics,
            limits: Limits {
                max_bytes: max_payload,
                ..Limits::default()
            },
            nmea: NmeaDevices::new(SourceKind::Mqtt, trust, max_devices, rejects.nmea()),
            rejects,
            tx,
            pulse: None,
            groups: None,
        }
    }

    /// Learns the groups of devices from their topics' group templates.
    pub fn with_groups(mut self, groups: Arc<Groups>) -> Self {
        self.groups = Some(groups);
        self
    }

    /// Reports to `pulse` while a message is being handled (the watchdog's
    /// view of this source).
    pub fn with_pulse(mut self, pulse: Arc<Pulse>) -> Self {
        self.pulse = Some(pulse);
        self
    }

    /// The shared rejection counter.
    pub fn rejects(&self) -> Arc<Rejects> {
        self.rejects.clone()
    }

    /// The subscription filters for the topic patterns.
    pub fn filters(&self) -> Vec<String> {
        // Two patterns with one filter must not subscribe twice: every
        // message would arrive twice (and an NMEA stream be fed twice).
        let mut filters: Vec<String> = Vec::new();
        for filter in self.topics.iter().map(|t| t.pattern.filter()) {
            if !filters.contains(&filter) {
                filters.push(filter);
            }
        }
        filters
    }

    /// Handles one message. Bad input is rejected and counted, never an error:
    /// only a closed pipeline ends the intake.
    pub async fn handle(&mut self, topic: &str, body: &[u8]) -> Result<(), PipelineClosed> {
        let pulse = self.pulse.clone();
        let _busy = pulse.as_deref().map(Pulse::busy);
        let Some((device, format)) = self.route(topic) else {
            return Ok(());
        };
        let parsed = match payload::parse(body, format, &self.limits, Utc::now()) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.reject(Some(device.as_str()), err.reason(), &err);
                return Ok(());
            }
        };
        match parsed {
            Parsed::Fixes(class, reported) => {
                let mut fixes = Vec::with_capacity(reported.len());
                for r in reported {
                    match r.device.as_deref() {
                        Some(named) if named != device.as_str() => {
                            let why = format!(
                                "payload names device {:?} but topic {:?} is device {device}",
                                outside(named, OUTSIDE_CHARS),
                                outside(topic, OUTSIDE_CHARS)
                            );
                            self.reject(Some(device.as_str()), "device_mismatch", &why);
                        }
                        _ => fixes.push(r.fix),
                    }
                }
                deliver(&self.tx, SourceKind::Mqtt, class, &device, fixes).await
            }
            Parsed::Nmea(text) => self.nmea.push(&device, text, &self.tx).await,
            Parsed::Ignored(kind) => {
                metrics::counter!("fixgate_ingest_ignored_total", "source" => "mqtt", "kind" => kind)
                    .increment(1);
                Ok(())
            }
        }
    }

    /// Counts a message refused for its size (`oversized`) for the device
    /// its topic names, as [`Messages::handle`] would have.
    pub fn refuse_oversized(&self, topic: &str, size: usize) {
        if let Some((device, _)) = self.route(topic) {
            let why = payload::PayloadError::Oversized {
                size,
                max: self.limits.max_bytes,
            };
            self.reject(Some(device.as_str()), why.reason(), &why);
        }
    }

    /// The device and format of a topic, or a counted rejection.
    fn route(&self, topic: &str) -> Option<(DeviceId, payload::Format)> {
        for t in &self.topics {
            match t.pattern.device_for(topic) {
                None => continue,
                Some(Ok(device)) => {
                    if let (Some(groups), Some(group)) = (&self.groups, t.pattern.group_for(topic))
                    {
                        groups.learn(&device, &group);
                    }
                    return Some((device, t.format));
                }
                Some(Err(err)) => {
                    let why = format!(
                        "topic {:?} gives no valid device id: {err}",
                        outside(topic, OUTSIDE_CHARS)
                    );
                    self.reject(None, "device_id", &why);
                    return None;
                }
            }
        }
        let why = format!(
            "topic {:?} matches no [[mqtt.topic]] pattern",
            outside(topic, OUTSIDE_CHARS)
        );
        self.reject(None, "unknown_topic", &why);
        None
    }

    fn reject(&self, device: Option<&str>, reason: &'static str, detail: &dyn std::fmt::Display) {
        self.rejects
            .reject(SourceKind::Mqtt, device, reason, detail);
    }
}
