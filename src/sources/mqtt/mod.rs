//! MQTT intake: devices publish to the gateway's own MQTT server
//! ([`embedded`]) or to an existing broker ([`external`]); either way each
//! message goes through [`Messages::handle`]: topic → device, payload →
//! fixes → pipeline.

pub mod embedded;
pub mod external;
pub mod scope;

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;

use super::Context;
use super::intake::{NmeaDevices, Rejects, deliver};
use super::payload::{self, Limits, Parsed};
use super::stream::PipelineClosed;
use crate::config::Topic;
use crate::daemon::health::Pulse;
use crate::fix::{DeviceId, DeviceIdError, GroupId, Observed, SourceKind};
use crate::groups::Groups;
use crate::telemetry;
use crate::util::log_limit::{OUTSIDE_CHARS, outside};

/// Where a topic leads, by the `[[mqtt.topic]]` patterns in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// The device and the payload format of the first matching pattern.
    Device(DeviceId, payload::Format),
    /// The first matching pattern builds no valid device id from it.
    BadId(DeviceIdError),
    /// No pattern matches.
    Unknown,
}

impl Route {
    /// The device, if the topic names one.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            Self::Device(device, _) => Some(device),
            Self::BadId(_) | Self::Unknown => None,
        }
    }
}

/// The topic patterns: a pure function from topic to [`Route`], shared by
/// the intake task and (on the embedded broker) every connection, which
/// must know the device before it lets a login publish for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Routes {
    topics: Vec<Topic>,
}

impl Routes {
    /// The routes of `topics`.
    pub fn new(topics: Vec<Topic>) -> Self {
        Self { topics }
    }

    /// Where `topic` leads.
    pub fn route(&self, topic: &str) -> Route {
        for t in &self.topics {
            match t.pattern.device_for(topic) {
                None => continue,
                Some(Ok(device)) => return Route::Device(device, t.format),
                Some(Err(err)) => return Route::BadId(err),
            }
        }
        Route::Unknown
    }

    /// The group of a topic's device: the group template of the first
    /// pattern that routes it (see [`crate::groups`]).
    pub fn group(&self, topic: &str) -> Option<GroupId> {
        let pattern = &self
            .topics
            .iter()
            .find(|t| t.pattern.device_for(topic).is_some())?
            .pattern;
        pattern.group_for(topic)
    }
}

/// Whether a message routed to `device` may be shown to other clients as it
/// is: its payload reads, and names no device but `device` (the intake
/// refuses one that names another as `device_mismatch`, and subscribers
/// must not be shown such a spoof either).
pub fn payload_is_for(
    device: &DeviceId,
    format: payload::Format,
    body: &[u8],
    limits: &Limits,
) -> bool {
    match payload::parse(body, format, limits, Utc::now()) {
        Ok(Parsed::Fixes(_, reported)) => reported
            .iter()
            .all(|r| r.device.as_deref().is_none_or(|d| d == device.as_str())),
        Ok(Parsed::Nmea(_) | Parsed::Ignored(_)) => true,
        Err(_) => false,
    }
}

/// Turns MQTT messages into fixes; owned by the one task that receives them.
#[derive(Debug)]
pub struct Messages {
    routes: Arc<Routes>,
    limits: Limits,
    nmea: NmeaDevices,
    rejects: Arc<Rejects>,
    tx: mpsc::Sender<Observed>,
    pulse: Option<Arc<Pulse>>,
    groups: Option<Arc<Groups>>,
}

impl Messages {
    /// A handler for `topics` with payloads of at most `max_payload` bytes,
    /// sending into `context`'s channel.
    pub fn new(topics: Vec<Topic>, max_payload: usize, context: &Context) -> Self {
        let rejects = context.rejects.clone();
        Self {
            routes: Arc::new(Routes::new(topics)),
            limits: Limits {
                max_bytes: max_payload,
                ..Limits::default()
            },
            nmea: NmeaDevices::new(
                SourceKind::Mqtt,
                context.clock,
                context.max_devices,
                rejects.nmea(),
            ),
            rejects,
            tx: context.tx.clone(),
            pulse: None,
            groups: Some(context.groups.clone()),
        }
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

    /// The topic patterns, for the connections of the embedded broker.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.clone()
    }

    /// The bounds a payload is read within.
    pub fn payload_limits(&self) -> Limits {
        self.limits
    }

    /// The subscription filters for the topic patterns.
    pub fn filters(&self) -> Vec<String> {
        // Two patterns with one filter must not subscribe twice: every
        // message would arrive twice (and an NMEA stream be fed twice).
        let mut filters: Vec<String> = Vec::new();
        for filter in self.routes.topics.iter().map(|t| t.pattern.filter()) {
            if !filters.contains(&filter) {
                filters.push(filter);
            }
        }
        filters
    }

    /// Handles one message. Bad input is rejected and counted, never an error:
    /// only a closed pipeline ends the intake.
    pub async fn handle(&mut self, topic: &str, body: &[u8]) -> Result<(), PipelineClosed> {
        let route = self.routes.route(topic);
        self.handle_routed(topic, route, body).await
    }

    /// [`Messages::handle`] for a message already routed (by the embedded
    /// broker's connection, which checked the login's scope with it).
    pub async fn handle_routed(
        &mut self,
        topic: &str,
        route: Route,
        body: &[u8],
    ) -> Result<(), PipelineClosed> {
        let pulse = self.pulse.clone();
        let _busy = pulse.as_deref().map(Pulse::busy);
        let Some((device, format)) = self.accept_route(topic, route) else {
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
                telemetry::INGEST_IGNORED.with(["mqtt", kind]).increment(1);
                Ok(())
            }
        }
    }

    /// Counts a message refused for its size (`oversized`) for the device
    /// its topic names, as [`Messages::handle`] would have.
    pub fn refuse_oversized(&self, topic: &str, size: usize) {
        if let Some((device, _)) = self.accept_route(topic, self.routes.route(topic)) {
            let why = payload::PayloadError::Oversized {
                size,
                max: self.limits.max_bytes,
            };
            self.reject(Some(device.as_str()), why.reason(), &why);
        }
    }

    /// The device and format of a routed topic, or a counted rejection.
    fn accept_route(&self, topic: &str, route: Route) -> Option<(DeviceId, payload::Format)> {
        match route {
            Route::Device(device, format) => {
                if let (Some(groups), Some(group)) = (&self.groups, self.routes.group(topic)) {
                    groups.learn(&device, &group);
                }
                Some((device, format))
            }
            Route::BadId(err) => {
                let why = format!(
                    "topic {:?} gives no valid device id: {err}",
                    outside(topic, OUTSIDE_CHARS)
                );
                self.reject(None, "device_id", &why);
                None
            }
            Route::Unknown => {
                let why = format!(
                    "topic {:?} matches no [[mqtt.topic]] pattern",
                    outside(topic, OUTSIDE_CHARS)
                );
                self.reject(None, "unknown_topic", &why);
                None
            }
        }
    }

    fn reject(&self, device: Option<&str>, reason: &'static str, detail: &dyn std::fmt::Display) {
        self.rejects
            .reject(SourceKind::Mqtt, device, reason, detail);
    }
}
