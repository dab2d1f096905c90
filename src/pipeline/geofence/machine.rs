//! The state machine of one device against every fence: which fences it is
//! in, and the events its fixes cause.
//!
//! Hysteresis (see [`Options`]): an enter needs a fix whose error circle is
//! wholly inside, or `enter_fixes` fixes in a row inside; an exit needs an
//! error circle wholly outside, by `exit_margin_m` more. Between the two,
//! nothing changes: a receiver parked on a boundary, jittering less than the
//! margin, enters at most once and never leaves.
//!
//! Live fixes (in fix-time order, as the filters guarantee) drive the live
//! state, which is persisted. Late fixes run through a replay of their own,
//! seeded from a short journal of the live transitions as they stood at the
//! late fix's time; their events are marked historic and the live state never
//! sees them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fix::{Crossing, DeviceId, FenceId, Fix, Geofence, Position};

use super::probe::{Probe, Spot};
use super::{Fence, FenceSet, Options, Rules};

/// Transitions kept per device and fence, for placing late fixes.
const JOURNAL: usize = 8;
/// Fences a device has left that keep their journal, per device (the most
/// recently left): a late fix from a visit beyond them is judged as if the
/// device had been outside. Bounds a device's state and the work per fix.
const LEFT_KEPT: usize = 64;
/// A late fix this long after the previous late fix of its device starts
/// the replay afresh from the journal.
const REPLAY_GAP_MS: i64 = 10 * 60 * 1000;
/// Speeding ends below this share of the limit, so that a speed hovering at
/// the limit makes one event, not one per fix.
const SPEED_CLEAR: f64 = 0.9;
/// First byte of the persisted form.
const ZONES_VERSION: u8 = 1;

/// A change of a device's side of a fence: when (ms since the epoch; `i64::MIN`
/// when only known to be before the journal) and whether it is now inside.
type Transition = (i64, bool);

/// One device against one fence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Track {
    /// The last transitions, oldest first; the last is the current side.
    journal: Vec<Transition>,
    /// The `dwell` event of this visit was sent.
    dwelt: bool,
    /// Above the speed limit now (its `speeding` event was sent).
    speeding: bool,
    /// Consecutive fixes inside while outside (not persisted: a restart
    /// only delays an enter by a few fixes).
    #[serde(skip)]
    run: u32,
    /// The evaluation that last looked at this track.
    #[serde(skip)]
    seen: u64,
}

impl Track {
    fn inside(&self) -> bool {
        self.journal.last().is_some_and(|t| t.1)
    }

    /// When the current visit or absence began.
    fn since(&self) -> Option<i64> {
        self.journal.last().map(|t| t.0)
    }

    fn turn(&mut self, at: i64, inside: bool) {
        if self.journal.len() >= JOURNAL {
            self.journal.remove(0);
        }
        self.journal.push((at, inside));
        self.run = 0;
        self.dwelt = false;
        self.speeding = false;
    }

    /// Which side the journal says the device was on at `at`, and since when.
    fn at(&self, at: i64) -> Option<Transition> {
        match self.journal.iter().rev().find(|t| t.0 <= at) {
            Some(t) => Some(*t),
            // Before the oldest transition kept: the other side of it.
            None => self.journal.first().map(|t| (i64::MIN, !t.1)),
        }
    }
}

/// A device's side of every fence it has been in: the live state, persisted
/// in the store beside the device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Zones {
    tracks: BTreeMap<FenceId, Track>,
}

/// A stored zones value that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ZonesError {
    /// Unknown first byte.
    #[error("unknown geofence state version {0:?}")]
    Version(Option<u8>),
    /// The rest does not deserialise.
    #[error("geofence state is malformed: {0}")]
    Body(#[from] postcard::Error),
}

impl Zones {
    /// The fences the device is in now, with when it came in.
    pub fn inside(&self) -> impl Iterator<Item = (&FenceId, Option<DateTime<Utc>>)> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.inside())
            .map(|(id, t)| (id, t.since().and_then(DateTime::from_timestamp_millis)))
    }

    /// How many fences the device has a track for.
    #[cfg(test)]
    pub(super) fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// The persisted form as `encode` wrote it before it avoided the copy:
    /// its tracks worth keeping copied into a new `Zones`, then postcard.
    #[cfg(test)]
    pub(super) fn encode_by_copy(&self) -> Vec<u8> {
        let copy = Zones {
            tracks: self
                .tracks
                .iter()
                .filter(|(_, t)| !t.journal.is_empty())
                .map(|(id, t)| (id.clone(), t.clone()))
                .collect(),
        };
        postcard::to_extend(&copy, vec![ZONES_VERSION]).unwrap()
    }

    /// True when nothing is worth keeping.
    pub fn is_empty(&self) -> bool {
        self.tracks.values().all(|t| t.journal.is_empty())
    }

    /// The persisted form: a version byte, then postcard. Tracks that never
    /// changed side are left out.
    pub fn encode(&self) -> Vec<u8> {
        // Room for the whole, so that postcard does not grow it byte by
        // byte: at most a 10-byte varint per time, 3 for a length, 1 a flag.
        let room: usize = self
            .tracks
            .iter()
            .filter(|(_, t)| !t.journal.is_empty())
            .map(|(id, t)| id.as_str().len() + 5 + 11 * t.journal.len())
            .sum();
        let mut out = Vec::with_capacity(room + 4);
        out.push(ZONES_VERSION);
        // Serialising maps of strings, integers and booleans cannot fail.
        postcard::to_extend(&Kept(&self.tracks), out).unwrap_or_default()
    }

    /// Reads the persisted form.
    pub fn decode(bytes: &[u8]) -> Result<Self, ZonesError> {
        match bytes.split_first() {
            Some((&ZONES_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
            other => Err(ZonesError::Version(other.map(|(v, _)| *v))),
        }
    }
}

/// The tracks worth persisting, serialised exactly as a [`Zones`] holding
/// only them would be, without copying them there first (the writer encodes
/// a device's zones at every change of side, dwell or speeding).
struct Kept<'a>(&'a BTreeMap<FenceId, Track>);

impl Serialize for Kept<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut zones = serializer.serialize_struct("Zones", 1)?;
        zones.serialize_field("tracks", &KeptTracks(self.0))?;
        zones.end()
    }
}

/// The map inside [`Kept`]; ids as the strings they serialise to.
struct KeptTracks<'a>(&'a BTreeMap<FenceId, Track>);

impl Serialize for KeptTracks<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let kept = || self.0.iter().filter(|(_, t)| !t.journal.is_empty());
        let mut map = serializer.serialize_map(Some(kept().count()))?;
        for (id, track) in kept() {
            map.serialize_entry(id.as_str(), track)?;
        }
        map.end()
    }
}

/// The replay of a device's late fixes.
#[derive(Debug, Default)]
struct Replay {
    /// Time of the last late fix evaluated (ms).
    last: i64,
    tracks: BTreeMap<FenceId, Track>,
}

/// One device's state machine.
#[derive(Debug, Default)]
pub struct Machine {
    live: Zones,
    replay: Option<Replay>,
    stamp: u64,
}

/// What one fix's evaluation needs besides the tracks.
struct Context<'a> {
    device: &'a DeviceId,
    fix: &'a Fix,
    set: &'a FenceSet,
    options: &'a Options,
    historic: bool,
}

impl Machine {
    /// A machine resuming from persisted zones.
    pub fn new(live: Zones) -> Self {
        Self {
            live,
            replay: None,
            stamp: 0,
        }
    }

    /// The live state.
    pub fn zones(&self) -> &Zones {
        &self.live
    }

    /// True when the machine holds nothing: no fence tracked, no replay.
    pub fn is_idle(&self) -> bool {
        self.live.tracks.is_empty() && self.replay.is_none()
    }

    /// Judges an accepted position: a live one (later than every live one
    /// before it) moves the live state, a historic one is judged in its place
    /// in the device's past without touching it. Adds the events it causes
    /// to `out` (marked historic for a historic position); returns true when
    /// the live state to persist changed.
    pub fn observe(
        &mut self,
        position: &Position,
        rules: &Rules,
        scratch: &mut Vec<usize>,
        out: &mut Vec<Geofence>,
    ) -> bool {
        self.stamp += 1;
        let cx = Context {
            device: &position.device,
            fix: &position.fix,
            set: &rules.fences,
            options: &rules.options,
            historic: position.historic,
        };
        if position.historic {
            self.historic(&cx, scratch, out);
            false
        } else {
            self.live(&cx, scratch, out)
        }
    }

    fn live(
        &mut self,
        cx: &Context<'_>,
        scratch: &mut Vec<usize>,
        out: &mut Vec<Geofence>,
    ) -> bool {
        // A live fix well past the last late one: that batch is over.
        let at = cx.fix.time.timestamp_millis();
        if self
            .replay
            .as_ref()
            .is_some_and(|r| at.saturating_sub(r.last) > REPLAY_GAP_MS)
        {
            self.replay = None;
        }
        evaluate(&mut self.live.tracks, self.stamp, cx, scratch, out)
    }

    fn historic(&mut self, cx: &Context<'_>, scratch: &mut Vec<usize>, out: &mut Vec<Geofence>) {
        let at = cx.fix.time.timestamp_millis();
        let live = &self.live;
        let fresh = match &self.replay {
            None => true,
            Some(r) => {
                at < r.last
                    || at - r.last > REPLAY_GAP_MS
                    // The live state changed in between: the replay's idea
                    // of the device's side may be stale.
                    || live
                        .tracks
                        .values()
                        .flat_map(|t| &t.journal)
                        .any(|t| t.0 > r.last && t.0 <= at)
            }
        };
        if fresh {
            self.replay = Some(Replay {
                last: at,
                tracks: seed(live, at),
            });
        }
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        evaluate(&mut replay.tracks, self.stamp, cx, scratch, out);
        replay.last = at;
        // Nothing to carry to the next late fix: a device far from every
        // fence keeps no replay (nor, through `is_idle`, a machine).
        if replay.tracks.is_empty() {
            self.replay = None;
        }
    }
}

/// The replay's tracks at `at`: inside where the journal says the device
/// was; a visit already under way counts as dwelt and speeding, so that a
/// late fix does not report again what the live machine did (a visit the
/// replay itself enters starts afresh).
fn seed(live: &Zones, at: i64) -> BTreeMap<FenceId, Track> {
    live.tracks
        .iter()
        .filter_map(|(id, track)| {
            let (since, inside) = track.at(at)?;
            inside.then(|| {
                let track = Track {
                    journal: vec![(since, true)],
                    dwelt: true,
                    speeding: true,
                    ..Track::default()
                };
                (id.clone(), track)
            })
        })
        .collect()
}

/// A fix's error radius in metres.
pub fn error_radius(fix: &Fix, options: &Options) -> f64 {
    fix.accuracy
        .or_else(|| fix.hdop.map(|h| h * options.hdop_error_m))
        .unwrap_or(options.default_error_m)
}

/// Steps every track the fix concerns: those of fences near it, and those
/// of fences it was in or nearly entered. Returns true when a track's
/// persisted part changed.
fn evaluate(
    tracks: &mut BTreeMap<FenceId, Track>,
    stamp: u64,
    cx: &Context<'_>,
    scratch: &mut Vec<usize>,
    out: &mut Vec<Geofence>,
) -> bool {
    let radius = error_radius(cx.fix, cx.options);
    let first = out.len();
    let mut changed = false;
    cx.set.near(
        cx.fix.lat,
        cx.fix.lon,
        radius + cx.options.exit_margin_m,
        scratch,
    );
    let spot = Spot::new(cx.fix.lat, cx.fix.lon);
    for &i in scratch.iter() {
        let Some(fence) = cx.set.fences().get(i) else {
            continue;
        };
        let mut depth = Probe::new(&fence.shape, spot);
        let track = match tracks.get_mut(&fence.id) {
            Some(track) => track,
            None if depth.above(0.0) => tracks.entry(fence.id.clone()).or_default(),
            None => continue,
        };
        track.seen = stamp;
        changed |= step(track, fence, &mut depth, radius, cx, out);
    }
    // The rest are beyond the reach of the fix's error circle and margin
    // (wholly outside), or their fence is gone. Fences left earlier, with
    // no enter under way, have nothing to judge: they only keep a journal.
    let mut left = 0;
    tracks.retain(|id, track| {
        if track.seen != stamp && (track.inside() || track.run > 0) {
            let Some(fence) = cx.set.get(id) else {
                changed |= !track.journal.is_empty();
                return false;
            };
            let mut depth = Probe::known(f64::NEG_INFINITY);
            changed |= step(track, fence, &mut depth, radius, cx, out);
        }
        left += usize::from(!track.inside() && !track.journal.is_empty());
        !track.journal.is_empty() || track.run > 0
    });
    if left > LEFT_KEPT {
        changed |= forget_oldest_left(tracks, left - LEFT_KEPT);
    }
    out[first..].sort_by(|a, b| (order(a.crossing), &a.fence).cmp(&(order(b.crossing), &b.fence)));
    changed
}

/// Drops the journals of the `n` fences left longest ago (a removed fence's
/// too: it is found by the next fix that looks at every track).
fn forget_oldest_left(tracks: &mut BTreeMap<FenceId, Track>, n: usize) -> bool {
    let mut left: Vec<(i64, FenceId)> = tracks
        .iter()
        .filter(|(_, t)| !t.inside() && t.run == 0)
        .filter_map(|(id, t)| Some((t.since()?, id.clone())))
        .collect();
    left.sort_unstable();
    for (_, id) in left.iter().take(n) {
        tracks.remove(id);
    }
    n > 0
}

/// Leaving comes before arriving, arriving before what happens inside.
fn order(c: Crossing) -> u8 {
    match c {
        Crossing::Exit => 0,
        Crossing::Enter => 1,
        Crossing::Dwell => 2,
        Crossing::Speeding => 3,
    }
}

/// One fix against one fence, at `depth` in it (asked only what the
/// decisions need). Returns true when the persisted part changed.
#[expect(
    clippy::too_many_arguments,
    reason = "the inner loop of the tracker: a struct for one fence's depth and radius would be built per fix and fence"
)]
fn step(
    track: &mut Track,
    fence: &Fence,
    depth: &mut Probe<'_>,
    radius: f64,
    cx: &Context<'_>,
    out: &mut Vec<Geofence>,
) -> bool {
    let at = cx.fix.time.timestamp_millis();
    let margin = cx.options.exit_margin_m;
    let needed = cx.options.enter_fixes;
    let mut changed = false;
    if track.inside() {
        // No count of fixes makes an exit: a device is out only once its
        // error circle is, so jitter under the margin never flaps.
        if depth.at_most(-(radius + margin)) {
            let since = track.since();
            track.turn(at, false);
            out.push(event(cx, fence, Crossing::Exit, since));
            return true;
        }
    } else {
        let inside = depth.above(0.0);
        track.run = if inside { track.run + 1 } else { 0 };
        if (inside && depth.at_least(radius)) || track.run >= needed {
            track.turn(at, true);
            out.push(event(cx, fence, Crossing::Enter, None));
            changed = true;
        } else {
            return false;
        }
    }
    let since = track.since();
    let dwelt_for = since.map_or(0, |s| at.saturating_sub(s));
    let dwell = fence
        .dwell
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if !track.dwelt && dwell.is_some_and(|d| dwelt_for >= d) {
        track.dwelt = true;
        out.push(event(cx, fence, Crossing::Dwell, since));
        changed = true;
    }
    if let (Some(limit), Some(speed)) = (fence.speed_limit, cx.fix.speed) {
        if !track.speeding && speed > limit {
            track.speeding = true;
            let mut e = event(cx, fence, Crossing::Speeding, since);
            e.speed = Some(speed);
            e.limit = Some(limit);
            out.push(e);
            changed = true;
        } else if track.speeding && speed <= limit * SPEED_CLEAR {
            track.speeding = false;
            changed = true;
        }
    }
    changed
}

fn event(cx: &Context<'_>, fence: &Fence, crossing: Crossing, since: Option<i64>) -> Geofence {
    Geofence {
        device: cx.device.clone(),
        fence: fence.id.clone(),
        crossing,
        time: cx.fix.time,
        lat: cx.fix.lat,
        lon: cx.fix.lon,
        speed: None,
        limit: None,
        since: since.and_then(DateTime::from_timestamp_millis),
        historic: cx.historic,
    }
}
