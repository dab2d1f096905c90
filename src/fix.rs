//! What flows through the gateway: the values of [`fixgate_wire::fix`]
//! (fixes, devices, events; shared with the cloud side through the wire
//! codec's crate) and, here, what only the gateway's pipeline needs: which
//! source and kind of device a fix came from.

pub use fixgate_wire::fix::*;

/// Which kind of source produced a fix; a label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A receiver on a serial port.
    Serial,
    /// An NMEA log replayed from a file.
    Replay,
    /// The built-in demo fleet.
    Demo,
    /// A device publishing over MQTT (embedded or external broker).
    Mqtt,
    /// A device posting over HTTP (fixgate JSON or OsmAnd).
    Http,
}

impl SourceKind {
    /// The lower-case label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serial => "serial",
            Self::Replay => "replay",
            Self::Demo => "demo",
            Self::Mqtt => "mqtt",
            Self::Http => "http",
        }
    }
}

/// What kind of device sent a fix, told by the protocol it speaks; a
/// metrics label, so that a fleet's trackers and the depot's receivers can
/// be told apart whichever transport carried them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceClass {
    /// A GNSS receiver speaking NMEA (serial, replayed, or over MQTT).
    NmeaReceiver,
    /// A tracker posting or publishing fixgate JSON.
    JsonTracker,
    /// The OwnTracks app (MQTT).
    OwnTracks,
    /// An OsmAnd-protocol client such as Traccar Client (HTTP).
    OsmAnd,
}

impl DeviceClass {
    /// The lower-case label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NmeaReceiver => "nmea_receiver",
            Self::JsonTracker => "json_tracker",
            Self::OwnTracks => "owntracks",
            Self::OsmAnd => "osmand",
        }
    }
}

/// A fix on its way from a source to the pipeline.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The kind of source that decoded it.
    pub source: SourceKind,
    /// The kind of device that sent it.
    pub class: DeviceClass,
    /// The device and its fix.
    pub position: Position,
}
