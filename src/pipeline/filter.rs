//! Fix filters: whether the writer stores a fix, and whether a stored fix is
//! the device's live position or a late (historic) one.
//!
//! A pure module: no I/O, no clock, no global state. The single writer calls
//! [`Filters::check`] for every fix of every source (serial NMEA, MQTT, HTTP)
//! before storing it, and passes its own clock in, so that a clock it does not
//! trust yet can be left out. The set follows Traccar's `filter.*` settings;
//! the defaults aim to drop junk while losing nothing real.
//!
//! | Filter | Drops a fix when | Default | Why |
//! |---|---|---|---|
//! | `invalid` | latitude or longitude is not finite or out of range, or another field fails `Fix::validate` (NaN, negative speed, HDOP or accuracy, course outside 0–360) | always on | such a fix cannot be drawn, measured or forwarded |
//! | `zero_island` | \|lat\| < 1e-6° and \|lon\| < 1e-6° | on | receivers and trackers without a fix report 0,0 as if it were a position |
//! | `future` | the fix time is more than `max_future` ahead of the gateway clock | 5 min | a receiver's wrong date would become the live position; 5 min absorbs clock skew |
//! | `too_old` | the fix time is more than `max_age` behind the gateway clock | 7 days | GPS week-number rollover dates fixes 19.6 years back; a week still takes in a tracker's buffer after a long offline stretch |
//! | `accuracy` | `hdop` is above `max_hdop`, or `accuracy` above `max_accuracy_m` | 20 and 200 m | an HDOP above 20 is a useless satellite geometry; phones on cell location report 1000 m and more |
//! | `duplicate` | the device already had a fix accepted with the same time, to the millisecond | on | MQTT QoS 1 redelivery, trackers re-sending their buffer, one receiver reaching the gateway twice |
//! | `speed_jump` | getting from the device's live fix to this one takes more than `max_speed_mps` | 100 m/s (360 km/h) | multipath and cell-location jumps of kilometres in seconds; no road vehicle or ferry is that fast. Gives way after 3 consistent drops (see below) |
//! | `min_period` | a live fix comes less than `min_period` after the device's live fix | off | thins a 5 or 10 Hz receiver when that much history is not wanted |
//! | `min_distance` | a live fix is less than `min_distance_m` from the device's live fix | off | thins the jitter of a parked device, which then stores nothing while parked |
//!
//! The checks run in the order of the table; a dropped fix reports the first
//! one it fails ([`Reason`]). Every limit can be turned off (`None`, or
//! `false` for `zero_island` and `duplicate`); `invalid` cannot.
//!
//! # Live and historic fixes
//!
//! The device's *live fix* is the newest fix accepted for it. A fix older than
//! it is **historic**: a tracker publishing what it buffered offline, or a
//! slow path overtaken by a fast one. It is kept ([`Verdict::Historic`]) but
//! never moves the live position. It passes `invalid`, `zero_island`,
//! `future`, `too_old`, `accuracy` and `duplicate` like any fix, but not
//! `speed_jump`, `min_period` or `min_distance`: those compare with the
//! neighbouring fixes in time, and for a late fix they are unknown. A device's
//! first fix is live.
//!
//! # `speed_jump` never locks a device out
//!
//! Compared only with the live fix, the speed check would lock a device out
//! whenever the live fix itself is the outlier (say, a device's first fix), or
//! the device really went far fast (a flight): every later fix would be
//! "too fast" from there. So each `speed_jump` drop is remembered as a
//! suspect, and after [`SPEED_JUMP_CONFIRM`] (3) consecutive drops, each
//! reachable from the one before within the limit, the newest is accepted as
//! live and becomes the new reference; the first two are lost. Outliers
//! scattered at random do not form such a run, and a fix plausible from the
//! live fix breaks one. Long gaps need no special case: the implied speed
//! stays meaningful (a ferry or a tow truck is far below 100 m/s however long
//! it takes), and after a flight the run rule applies. Only the position
//! counts: the speed a receiver reports is not checked.
//!
//! # An untrusted clock
//!
//! A Raspberry Pi without a real-time clock starts in the past until NTP
//! syncs. While the caller passes `now = None`, `future` and `too_old` are
//! skipped rather than dropping every fix. A live fix that turns out to be
//! beyond `future` once the clock is trusted (a receiver with a wrong date,
//! accepted meanwhile) is no longer used as the reference, so it cannot make
//! every later fix historic.
//!
//! # `min_distance` and presence
//!
//! As in Traccar's `filter.distance`, a fix closer than the limit to the last
//! *kept* fix is dropped, so slow drift is kept once it adds up, and a parked
//! vehicle stores nothing while its jitter stays within the limit. Whether a device is online is therefore
//! judged by fixes arriving (the caller tracks that), never by fixes stored.
//!
//! # State and memory
//!
//! A verdict other than `Drop` is remembered, and the caller must store every
//! such fix; a drop changes nothing, except that a `speed_jump` drop is noted
//! as a suspect (and a fix plausible from the live fix clears the suspects).
//! Per device the filters keep the live fix (time and position), the times of
//! the last [`RECENT_TIMES`] (256) accepted fixes, live and historic, and
//! fewer than [`SPEED_JUMP_CONFIRM`] suspects: 104 bytes in the map plus at most
//! 2 KiB of times and 96 bytes of suspects, about 2.3 KiB at most. A historic
//! fix older than the last 256 accepted ones is not recognised as a duplicate.
//! [`Filters::seed`] restores only the live fix after a restart, so a buffer
//! re-sent across a restart can be stored twice, apart from its newest fix.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::fix::{DeviceId, Fix};

/// Mean Earth radius in metres: the IUGG mean radius R₁ = (2a + b) / 3 of the
/// GRS 80 ellipsoid (Moritz, *Geodetic Reference System 1980*).
pub const EARTH_MEAN_RADIUS_M: f64 = 6_371_008.8;

/// Accepted fix times remembered per device to recognise a repeated historic
/// fix: 2 KiB, about four minutes of a 1 Hz receiver or a tracker's buffer.
pub const RECENT_TIMES: usize = 256;

/// Consecutive `speed_jump` drops, each plausible from the one before, after
/// which the newest is accepted as live: the device really is elsewhere (the
/// live fix was the outlier, or it was carried by ferry, truck or plane).
pub const SPEED_JUMP_CONFIRM: usize = 3;

/// A fix closer than this many degrees to 0 in both latitude and longitude
/// is at "Null Island": about 0.1 m at the equator, far below any receiver's
/// precision, so a real fix there is not lost in practice.
const ZERO_ISLAND_DEG: f64 = 1e-6;

/// Great-circle distance in metres between two points given in degrees.
///
/// Haversine on a sphere of radius [`EARTH_MEAN_RADIUS_M`]: within about 0.5 % of
/// the ellipsoidal distance, plenty for plausibility checks.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let half_dphi = (phi2 - phi1) / 2.0;
    let half_dlambda = (lon2 - lon1).to_radians() / 2.0;
    let a = half_dphi.sin().powi(2) + phi1.cos() * phi2.cos() * half_dlambda.sin().powi(2);
    // Rounding can push `a` a hair above 1 near the antipode; asin would give NaN.
    2.0 * EARTH_MEAN_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// Which filters run and their limits. `Default` gives the documented defaults.
///
/// Limits are expected to be finite and non-negative (the config checks them);
/// a `None` limit turns its filter off.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterOptions {
    /// `zero_island`: drop fixes at 0,0.
    pub drop_zero_island: bool,
    /// `future`: how far a fix time may be ahead of the gateway clock.
    pub max_future: Option<Duration>,
    /// `too_old`: how far a fix time may be behind the gateway clock.
    pub max_age: Option<Duration>,
    /// `accuracy`: the largest horizontal dilution of precision kept.
    pub max_hdop: Option<f64>,
    /// `accuracy`: the largest reported horizontal accuracy kept, in metres.
    pub max_accuracy_m: Option<f64>,
    /// `duplicate`: drop a fix whose time (to the millisecond) equals that of
    /// a fix already accepted for the device.
    pub drop_duplicates: bool,
    /// `speed_jump`: the highest speed, in metres per second, implied by the
    /// distance and time from the device's live fix.
    pub max_speed_mps: Option<f64>,
    /// `min_period`: the shortest time kept between live fixes.
    pub min_period: Option<Duration>,
    /// `min_distance`: the shortest distance kept between live fixes, in metres.
    pub min_distance_m: Option<f64>,
}

impl Default for FilterOptions {
    fn default() -> Self {
        Self {
            drop_zero_island: true,
            max_future: Some(Duration::from_secs(5 * 60)),
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_hdop: Some(20.0),
            max_accuracy_m: Some(200.0),
            drop_duplicates: true,
            max_speed_mps: Some(100.0),
            min_period: None,
            min_distance_m: None,
        }
    }
}

impl FilterOptions {
    /// The checks that need nothing but the fix and the clock, in order.
    fn check_fix(&self, fix: &Fix, now: Option<DateTime<Utc>>) -> Result<(), Reason> {
        if fix.validate().is_err() {
            return Err(Reason::Invalid);
        }
        if self.drop_zero_island
            && fix.lat.abs() < ZERO_ISLAND_DEG
            && fix.lon.abs() < ZERO_ISLAND_DEG
        {
            return Err(Reason::ZeroIsland);
        }
        if let Some(now) = now {
            let (time, now) = (fix.time.timestamp_millis(), now.timestamp_millis());
            if self
                .max_future
                .is_some_and(|d| time > now.saturating_add(millis(d)))
            {
                return Err(Reason::Future);
            }
            if self
                .max_age
                .is_some_and(|d| time < now.saturating_sub(millis(d)))
            {
                return Err(Reason::TooOld);
            }
        }
        if exceeds(fix.hdop, self.max_hdop) || exceeds(fix.accuracy, self.max_accuracy_m) {
            return Err(Reason::Accuracy);
        }
        Ok(())
    }

    /// True if a time is beyond the `future` limit of a trusted clock.
    fn is_future(&self, ms: i64, now: Option<DateTime<Utc>>) -> bool {
        now.zip(self.max_future)
            .is_some_and(|(now, max)| ms > now.timestamp_millis().saturating_add(millis(max)))
    }

    /// The thinning checks, against the device's live fix.
    fn check_spacing(&self, anchor: Point, fix: Point) -> Result<(), Reason> {
        let dt_ms = fix.ms.saturating_sub(anchor.ms);
        if self
            .min_period
            .is_some_and(|min| dt_ms > 0 && dt_ms < millis(min))
        {
            return Err(Reason::MinPeriod);
        }
        if self
            .min_distance_m
            .is_some_and(|min| anchor.metres_to(fix) < min)
        {
            return Err(Reason::MinDistance);
        }
        Ok(())
    }
}

/// A duration in whole milliseconds; one too long for `i64` means "never".
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// True if a reported value is above a configured limit; an absent value or
/// limit never exceeds.
fn exceeds(value: Option<f64>, limit: Option<f64>) -> bool {
    value.zip(limit).is_some_and(|(v, max)| v > max)
}

/// Why a fix was dropped; the label of the drop metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Coordinates out of range or not finite, or a field fails [`Fix::validate`].
    Invalid,
    /// At 0,0, which receivers report when they have no fix.
    ZeroIsland,
    /// Too far ahead of the gateway clock.
    Future,
    /// Too far behind the gateway clock.
    TooOld,
    /// The same device and fix time as a fix already accepted.
    Duplicate,
    /// Implies an impossible speed from the device's live position.
    SpeedJump,
    /// HDOP or reported accuracy worse than the limit.
    Accuracy,
    /// Too soon after the device's live fix.
    MinPeriod,
    /// Too close to the device's live fix.
    MinDistance,
}

impl Reason {
    /// Every reason, in the order the checks run: for registering metrics up front.
    pub const ALL: [Reason; 9] = [
        Reason::Invalid,
        Reason::ZeroIsland,
        Reason::Future,
        Reason::TooOld,
        Reason::Accuracy,
        Reason::Duplicate,
        Reason::SpeedJump,
        Reason::MinPeriod,
        Reason::MinDistance,
    ];

    /// The stable snake_case label used in metrics, logs and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::ZeroIsland => "zero_island",
            Self::Future => "future",
            Self::TooOld => "too_old",
            Self::Duplicate => "duplicate",
            Self::SpeedJump => "speed_jump",
            Self::Accuracy => "accuracy",
            Self::MinPeriod => "min_period",
            Self::MinDistance => "min_distance",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Store it as the device's live position.
    Live,
    /// Store it as history only: it is older than the device's live fix.
    Historic,
    /// Do not store it.
    Drop(Reason),
}

/// Where and when a device was: all the filters keep of a fix.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    /// Fix time in milliseconds since the Unix epoch.
    ms: i64,
    lat: f64,
    lon: f64,
}

impl Point {
    fn of(fix: &Fix) -> Self {
        Self {
            ms: fix.time.timestamp_millis(),
            lat: fix.lat,
            lon: fix.lon,
        }
    }

    fn metres_to(self, other: Point) -> f64 {
        haversine_m(self.lat, self.lon, other.lat, other.lon)
    }

    /// Whether `later` can be reached from here at `max` m/s; a `later` that
    /// is not later has no speed and counts as reachable.
    fn reaches(self, later: Point, max: f64) -> bool {
        let dt_ms = later.ms.saturating_sub(self.ms);
        dt_ms <= 0 || self.metres_to(later) / (dt_ms as f64 / 1000.0) <= max
    }
}

/// How a live candidate fares against the speed limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jump {
    /// Reachable from the live fix.
    Plausible,
    /// Not reachable: dropped, but remembered as a suspect.
    Suspect,
    /// Not reachable, but the last of a consistent run of suspects: the device moved.
    Confirmed,
}

/// What the filters remember of one device.
#[derive(Debug, Clone, Default, PartialEq)]
struct DeviceState {
    /// The last live fix: the reference of the live-only filters, and the
    /// line between live and historic fixes.
    live: Option<Point>,
    /// Times of recently accepted fixes, live and historic, oldest first.
    recent: VecDeque<i64>,
    /// The current run of `speed_jump` drops, each reachable from the one
    /// before; shorter than [`SPEED_JUMP_CONFIRM`].
    suspects: Vec<Point>,
}

impl DeviceState {
    fn has_time(&self, ms: i64) -> bool {
        self.live.is_some_and(|live| live.ms == ms) || self.recent.contains(&ms)
    }

    fn remember(&mut self, ms: i64) {
        if self.recent.len() >= RECENT_TIMES {
            self.recent.pop_front();
        }
        self.recent.push_back(ms);
    }

    fn accept_live(&mut self, fix: Point) {
        self.live = Some(fix);
        self.suspects.clear();
        self.remember(fix.ms);
    }

    /// The `speed_jump` check with its way out: without one, an outlier taken
    /// as the live fix (or a vehicle really moved far) would lock the device
    /// out for as long as the implied speed stays above the limit.
    fn speed_jump(&mut self, live: Point, fix: Point, max: f64) -> Jump {
        if live.reaches(fix, max) {
            // Evidence for the live fix: a run of suspects must be unbroken.
            self.suspects.clear();
            return Jump::Plausible;
        }
        if !self
            .suspects
            .last()
            .is_some_and(|s| s.reaches(fix, max) && s.ms < fix.ms)
        {
            self.suspects.clear();
        }
        self.suspects.push(fix);
        if self.suspects.len() >= SPEED_JUMP_CONFIRM {
            self.suspects.clear();
            Jump::Confirmed
        } else {
            Jump::Suspect
        }
    }
}

/// The filters with their per-device state; owned by the single writer.
#[derive(Debug, Clone)]
pub struct Filters {
    options: FilterOptions,
    devices: HashMap<DeviceId, DeviceState>,
}

impl Filters {
    /// Filters with the given options and no device seen yet.
    pub fn new(options: FilterOptions) -> Self {
        Self {
            options,
            devices: HashMap::new(),
        }
    }

    /// How many devices the filters hold state for.
    pub fn tracked_devices(&self) -> usize {
        self.devices.len()
    }

    /// Seeds a device's last live fix (from the store at start-up) so that a
    /// restart neither re-accepts a duplicate of it nor forgets where the
    /// device is.
    pub fn seed(&mut self, device: &DeviceId, last_live: &Fix) {
        let state = self.devices.entry(device.clone()).or_default();
        let point = Point::of(last_live);
        // Seeding is repeatable: the time goes into the ring once.
        if !state.recent.contains(&point.ms) {
            state.remember(point.ms);
        }
        state.live = Some(point);
        state.suspects.clear();
    }

    /// Drops what the filters know of a device (removed from the config); its
    /// next fix is treated as its first.
    pub fn forget(&mut self, device: &DeviceId) {
        self.devices.remove(device);
    }

    /// Decides whether `fix` of `device` is stored, and as what; a verdict
    /// other than `Drop` is remembered, so the caller must store such a fix.
    ///
    /// `now` is the gateway clock, or `None` while it is not trusted (no RTC
    /// before NTP sync): then `future` and `too_old` are skipped, because a
    /// wrong clock must never drop every fix.
    pub fn check(&mut self, device: &DeviceId, fix: &Fix, now: Option<DateTime<Utc>>) -> Verdict {
        if let Err(reason) = self.options.check_fix(fix, now) {
            return Verdict::Drop(reason);
        }
        let point = Point::of(fix);
        let Some(state) = self.devices.get_mut(device) else {
            // A first fix has nothing to be historic, duplicate or implausible against.
            let mut state = DeviceState::default();
            state.accept_live(point);
            self.devices.insert(device.clone(), state);
            return Verdict::Live;
        };
        if self.options.drop_duplicates && state.has_time(point.ms) {
            return Verdict::Drop(Reason::Duplicate);
        }
        // A live fix beyond the future limit was taken while the clock was not
        // trusted; kept as the reference, it would make every later fix historic.
        let live = state
            .live
            .filter(|live| !self.options.is_future(live.ms, now));
        match live {
            Some(live) if point.ms < live.ms => {
                state.remember(point.ms);
                Verdict::Historic
            }
            Some(live) => {
                let jump = self
                    .options
                    .max_speed_mps
                    .map(|max| state.speed_jump(live, point, max));
                let outcome = match jump {
                    Some(Jump::Suspect) => Err(Reason::SpeedJump),
                    Some(Jump::Confirmed) => Ok(()),
                    Some(Jump::Plausible) | None => self.options.check_spacing(live, point),
                };
                match outcome {
                    Ok(()) => {
                        state.accept_live(point);
                        Verdict::Live
                    }
                    Err(reason) => Verdict::Drop(reason),
                }
            }
            None => {
                state.accept_live(point);
                Verdict::Live
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base time of the tests: 2023-11-14T22:13:20Z.
    const BASE_MS: i64 = 1_700_000_000_000;
    const BASE_LAT: f64 = 52.0;
    const BASE_LON: f64 = 13.0;
    /// Metres per degree of latitude on the test sphere: a pure northward
    /// offset of `m / M_PER_DEG` degrees is `m` metres by [`haversine_m`].
    const M_PER_DEG: f64 = EARTH_MEAN_RADIUS_M * std::f64::consts::PI / 180.0;

    fn time(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(BASE_MS + ms).unwrap()
    }

    /// A fix `ms` after the base time, `north_m` metres north of the base point.
    fn fix(ms: i64, north_m: f64) -> Fix {
        Fix::new(time(ms), BASE_LAT + north_m / M_PER_DEG, BASE_LON)
    }

    fn dev() -> DeviceId {
        DeviceId::new("bus-1").unwrap()
    }

    fn filters() -> Filters {
        Filters::new(FilterOptions::default())
    }

    #[test]
    fn haversine_matches_known_distances() {
        assert_eq!(haversine_m(BASE_LAT, BASE_LON, BASE_LAT, BASE_LON), 0.0);
        let one_degree = haversine_m(0.0, 0.0, 1.0, 0.0);
        assert!((one_degree - 111_195.08).abs() < 0.01, "{one_degree}");
        assert!((haversine_m(0.0, 0.0, 0.0, 1.0) - one_degree).abs() < 1e-6);
        // Haversine is ill-conditioned at the antipode (asin near 1): metre tolerance.
        let antipode = haversine_m(10.0, 20.0, -10.0, -160.0);
        assert!((antipode - EARTH_MEAN_RADIUS_M * std::f64::consts::PI).abs() < 1.0);
        // Berlin Tegel to Paris CDG, about 851 km (529 mi) great-circle.
        let d = haversine_m(52.5597, 13.2877, 49.0097, 2.5479);
        assert!((845_000.0..855_000.0).contains(&d), "{d}");
        assert_eq!(d, haversine_m(49.0097, 2.5479, 52.5597, 13.2877));
    }

    #[test]
    fn reason_labels_are_stable() {
        let labels: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "invalid",
                "zero_island",
                "future",
                "too_old",
                "accuracy",
                "duplicate",
                "speed_jump",
                "min_period",
                "min_distance"
            ]
        );
        assert_eq!(Reason::SpeedJump.to_string(), "speed_jump");
    }

    #[test]
    fn invalid_drops_out_of_range_and_bad_fields() {
        let mut f = filters();
        let now = Some(time(0));
        let mut bad = fix(0, 0.0);
        bad.lat = 90.5;
        assert_eq!(f.check(&dev(), &bad, now), Verdict::Drop(Reason::Invalid));
        bad.lat = f64::NAN;
        assert_eq!(f.check(&dev(), &bad, now), Verdict::Drop(Reason::Invalid));
        let mut bad = fix(0, 0.0);
        bad.speed = Some(-1.0);
        assert_eq!(f.check(&dev(), &bad, now), Verdict::Drop(Reason::Invalid));
        let mut pole = fix(0, 0.0);
        pole.lat = 90.0;
        pole.lon = -180.0;
        assert_eq!(f.check(&dev(), &pole, now), Verdict::Live);
    }

    #[test]
    fn zero_island_drops_zero_zero_only() {
        let mut f = filters();
        let mut zero = fix(0, 0.0);
        (zero.lat, zero.lon) = (5e-7, -5e-7);
        assert_eq!(
            f.check(&dev(), &zero, None),
            Verdict::Drop(Reason::ZeroIsland)
        );
        let mut equator = fix(1000, 0.0);
        (equator.lat, equator.lon) = (0.0, 2e-6);
        assert_eq!(f.check(&dev(), &equator, None), Verdict::Live);

        let mut off = Filters::new(FilterOptions {
            drop_zero_island: false,
            ..FilterOptions::default()
        });
        assert_eq!(off.check(&dev(), &zero, None), Verdict::Live);
    }

    #[test]
    fn future_drops_beyond_the_margin() {
        let mut f = filters();
        let now = Some(time(0));
        let margin = 5 * 60 * 1000;
        assert_eq!(
            f.check(&dev(), &fix(margin + 1, 0.0), now),
            Verdict::Drop(Reason::Future)
        );
        assert_eq!(f.check(&dev(), &fix(margin, 0.0), now), Verdict::Live);
    }

    #[test]
    fn too_old_drops_beyond_the_age() {
        let mut f = filters();
        let now = Some(time(0));
        let age = 7 * 24 * 3600 * 1000;
        assert_eq!(
            f.check(&dev(), &fix(-age - 1, 0.0), now),
            Verdict::Drop(Reason::TooOld)
        );
        assert_eq!(f.check(&dev(), &fix(-age, 0.0), now), Verdict::Live);
    }

    #[test]
    fn untrusted_clock_skips_future_and_too_old() {
        let mut f = filters();
        let year_ms = 365 * 24 * 3600 * 1000;
        assert_eq!(
            f.check(&dev(), &fix(-20 * year_ms, 0.0), None),
            Verdict::Live
        );
        let other = DeviceId::new("bus-2").unwrap();
        assert_eq!(f.check(&other, &fix(year_ms, 0.0), None), Verdict::Live);
    }

    #[test]
    fn accuracy_drops_poor_hdop_or_accuracy() {
        let mut f = filters();
        let mut poor = fix(0, 0.0);
        poor.hdop = Some(20.01);
        assert_eq!(
            f.check(&dev(), &poor, None),
            Verdict::Drop(Reason::Accuracy)
        );
        let mut poor = fix(0, 0.0);
        poor.accuracy = Some(1200.0);
        assert_eq!(
            f.check(&dev(), &poor, None),
            Verdict::Drop(Reason::Accuracy)
        );
        let mut edge = fix(0, 0.0);
        edge.hdop = Some(20.0);
        edge.accuracy = Some(200.0);
        assert_eq!(f.check(&dev(), &edge, None), Verdict::Live);

        let mut off = Filters::new(FilterOptions {
            max_hdop: None,
            max_accuracy_m: None,
            ..FilterOptions::default()
        });
        assert_eq!(off.check(&dev(), &poor, None), Verdict::Live);
    }

    fn state(f: &Filters) -> DeviceState {
        f.devices.get(&dev()).cloned().unwrap_or_default()
    }

    #[test]
    fn first_fix_of_a_device_is_live() {
        let mut f = filters();
        assert_eq!(f.check(&dev(), &fix(0, 0.0), Some(time(0))), Verdict::Live);
        assert_eq!(f.tracked_devices(), 1);
    }

    #[test]
    fn duplicate_drops_the_same_millisecond_only() {
        let mut f = filters();
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        let mut again = fix(0, 5.0);
        again.time += chrono::TimeDelta::microseconds(400);
        assert_eq!(
            f.check(&dev(), &again, None),
            Verdict::Drop(Reason::Duplicate)
        );
        assert_eq!(f.check(&dev(), &fix(1, 0.0), None), Verdict::Live);
        let other = DeviceId::new("bus-2").unwrap();
        assert_eq!(f.check(&other, &fix(0, 0.0), None), Verdict::Live);

        let mut off = Filters::new(FilterOptions {
            drop_duplicates: false,
            ..FilterOptions::default()
        });
        assert_eq!(off.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        assert_eq!(off.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
    }

    #[test]
    fn late_fix_is_historic_and_keeps_the_live_position() {
        let mut f = Filters::new(FilterOptions {
            min_distance_m: Some(50.0),
            ..FilterOptions::default()
        });
        let now = Some(time(0));
        assert_eq!(f.check(&dev(), &fix(-10_000, 0.0), now), Verdict::Live);
        // Far away and only 1 ms before: the live-only filters do not apply.
        assert_eq!(
            f.check(&dev(), &fix(-10_001, 500_000.0), now),
            Verdict::Historic
        );
        assert_eq!(f.check(&dev(), &fix(-20_000, 10.0), now), Verdict::Historic);
        assert_eq!(state(&f).live, Some(Point::of(&fix(-10_000, 0.0))));
        // min_distance still measures from the live fix, not the historic ones.
        assert_eq!(
            f.check(&dev(), &fix(-5_000, 10.0), now),
            Verdict::Drop(Reason::MinDistance)
        );
        // Historic fixes pass the stateless filters like any other.
        let mut poor = fix(-30_000, 0.0);
        poor.accuracy = Some(5000.0);
        assert_eq!(f.check(&dev(), &poor, now), Verdict::Drop(Reason::Accuracy));
        let week_ms = 7 * 24 * 3600 * 1000;
        assert_eq!(
            f.check(&dev(), &fix(-week_ms - 1, 0.0), now),
            Verdict::Drop(Reason::TooOld)
        );
    }

    #[test]
    fn historic_duplicate_is_dropped() {
        let mut f = filters();
        assert_eq!(f.check(&dev(), &fix(60_000, 0.0), None), Verdict::Live);
        assert_eq!(f.check(&dev(), &fix(1_000, 0.0), None), Verdict::Historic);
        assert_eq!(f.check(&dev(), &fix(2_000, 0.0), None), Verdict::Historic);
        assert_eq!(
            f.check(&dev(), &fix(1_000, 0.0), None),
            Verdict::Drop(Reason::Duplicate)
        );
        // A live fix later re-sent as part of a buffer is a duplicate too.
        assert_eq!(f.check(&dev(), &fix(61_000, 0.0), None), Verdict::Live);
        assert_eq!(
            f.check(&dev(), &fix(60_000, 0.0), None),
            Verdict::Drop(Reason::Duplicate)
        );
    }

    #[test]
    fn recent_times_stay_bounded() {
        let mut f = filters();
        let total = RECENT_TIMES as i64 + 44;
        assert_eq!(
            f.check(&dev(), &fix(total * 1000, 0.0), None),
            Verdict::Live
        );
        for i in 0..total {
            assert_eq!(
                f.check(&dev(), &fix(i * 1000, 0.0), None),
                Verdict::Historic
            );
        }
        let s = state(&f);
        assert_eq!(s.recent.len(), RECENT_TIMES);
        // The oldest times are forgotten (documented); the live one never is.
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Historic);
        assert_eq!(
            f.check(&dev(), &fix(total * 1000, 0.0), None),
            Verdict::Drop(Reason::Duplicate)
        );
    }

    #[test]
    fn min_period_drops_live_fixes_that_come_too_soon() {
        let mut f = Filters::new(FilterOptions {
            min_period: Some(Duration::from_secs(10)),
            ..FilterOptions::default()
        });
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        assert_eq!(
            f.check(&dev(), &fix(9_999, 10.0), None),
            Verdict::Drop(Reason::MinPeriod)
        );
        assert_eq!(f.check(&dev(), &fix(10_000, 10.0), None), Verdict::Live);
        // Off by default: a 10 Hz receiver is kept in full.
        let mut d = filters();
        assert_eq!(d.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        assert_eq!(d.check(&dev(), &fix(100, 1.0), None), Verdict::Live);
    }

    #[test]
    fn min_distance_drops_live_fixes_that_barely_move() {
        let mut f = Filters::new(FilterOptions {
            min_distance_m: Some(50.0),
            ..FilterOptions::default()
        });
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        assert_eq!(
            f.check(&dev(), &fix(1_000, 30.0), None),
            Verdict::Drop(Reason::MinDistance)
        );
        // Measured from the last kept fix, so slow drift is kept once it adds up.
        assert_eq!(f.check(&dev(), &fix(2_000, 50.0), None), Verdict::Live);
        assert_eq!(
            f.check(&dev(), &fix(3_000, 99.0), None),
            Verdict::Drop(Reason::MinDistance)
        );
        let mut d = filters();
        assert_eq!(d.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        assert_eq!(d.check(&dev(), &fix(1_000, 0.0), None), Verdict::Live);
    }

    #[test]
    fn seed_restores_the_live_fix_after_a_restart() {
        let mut f = filters();
        let last = fix(60_000, 0.0);
        f.seed(&dev(), &last);
        assert_eq!(
            f.check(&dev(), &last, None),
            Verdict::Drop(Reason::Duplicate)
        );
        assert_eq!(f.check(&dev(), &fix(30_000, 0.0), None), Verdict::Historic);
        assert_eq!(f.check(&dev(), &fix(61_000, 0.0), None), Verdict::Live);
        // Seeding twice (a second start-up pass) stores the time once.
        let mut g = filters();
        g.seed(&dev(), &last);
        g.seed(&dev(), &last);
        assert_eq!(state(&g).recent.len(), 1);
    }

    #[test]
    fn forget_makes_the_next_fix_a_first_fix() {
        let mut f = filters();
        assert_eq!(f.check(&dev(), &fix(60_000, 0.0), None), Verdict::Live);
        f.forget(&dev());
        assert_eq!(f.tracked_devices(), 0);
        assert_eq!(f.check(&dev(), &fix(1_000, 0.0), None), Verdict::Live);
    }

    #[test]
    fn drop_leaves_the_state_unchanged() {
        let mut f = Filters::new(FilterOptions {
            min_period: Some(Duration::from_secs(5)),
            min_distance_m: Some(20.0),
            ..FilterOptions::default()
        });
        let now = Some(time(0));
        assert_eq!(f.check(&dev(), &fix(-60_000, 0.0), now), Verdict::Live);
        assert_eq!(f.check(&dev(), &fix(-90_000, 0.0), now), Verdict::Historic);
        let before = state(&f);
        let mut poor = fix(-50_000, 100.0);
        poor.hdop = Some(99.0);
        let mut invalid = fix(-50_000, 100.0);
        invalid.course = Some(400.0);
        let drops = [
            (invalid, Reason::Invalid),
            (poor, Reason::Accuracy),
            (fix(3_600_000, 100.0), Reason::Future),
            (fix(-90_000, 100.0), Reason::Duplicate),
            (fix(-58_000, 100.0), Reason::MinPeriod),
            (fix(-50_000, 10.0), Reason::MinDistance),
        ];
        for (d, reason) in &drops {
            assert_eq!(f.check(&dev(), d, now), Verdict::Drop(*reason), "{d:?}");
        }
        assert_eq!(state(&f), before);
        assert_eq!(f.tracked_devices(), 1);
        let other = DeviceId::new("bus-2").unwrap();
        assert_eq!(
            f.check(&other, &drops[0].0, now),
            Verdict::Drop(Reason::Invalid)
        );
        assert_eq!(f.tracked_devices(), 1);
    }

    #[test]
    fn speed_jump_drops_impossible_moves() {
        let mut f = filters();
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        assert_eq!(
            f.check(&dev(), &fix(10_000, 1_001.0), None),
            Verdict::Drop(Reason::SpeedJump)
        );
        assert_eq!(state(&f).live, Some(Point::of(&fix(0, 0.0))));
        assert_eq!(f.check(&dev(), &fix(10_000, 999.0), None), Verdict::Live);

        // Exactly at the limit passes.
        let (from, to) = (Point::of(&fix(0, 0.0)), Point::of(&fix(7_000, 777.0)));
        let mut edge = Filters::new(FilterOptions {
            max_speed_mps: Some(from.metres_to(to) / 7.0),
            ..FilterOptions::default()
        });
        assert_eq!(edge.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        assert_eq!(edge.check(&dev(), &fix(7_000, 777.0), None), Verdict::Live);

        let mut off = Filters::new(FilterOptions {
            max_speed_mps: None,
            ..FilterOptions::default()
        });
        assert_eq!(off.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        assert_eq!(
            off.check(&dev(), &fix(1_000, 50_000.0), None),
            Verdict::Live
        );
    }

    #[test]
    fn speed_jump_allows_slow_long_moves_like_a_ferry() {
        let mut f = filters();
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        // 60 km in two hours without a fix: about 8 m/s.
        let two_hours = 2 * 3600 * 1000;
        assert_eq!(
            f.check(&dev(), &fix(two_hours, 60_000.0), None),
            Verdict::Live
        );
    }

    #[test]
    fn speed_jump_recovers_when_the_live_fix_was_the_outlier() {
        let mut f = filters();
        // The first fix is a 300 km multipath outlier; it is all there is to compare with.
        assert_eq!(f.check(&dev(), &fix(0, 300_000.0), None), Verdict::Live);
        // The real track, 10 m/s: the first two are held back, the third re-anchors.
        assert_eq!(
            f.check(&dev(), &fix(1_000, 0.0), None),
            Verdict::Drop(Reason::SpeedJump)
        );
        assert_eq!(
            f.check(&dev(), &fix(2_000, 10.0), None),
            Verdict::Drop(Reason::SpeedJump)
        );
        assert_eq!(f.check(&dev(), &fix(3_000, 20.0), None), Verdict::Live);
        assert_eq!(f.check(&dev(), &fix(4_000, 30.0), None), Verdict::Live);
        assert!(state(&f).suspects.is_empty());
    }

    #[test]
    fn speed_jump_recovers_after_a_flight() {
        let mut f = filters();
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        // 1,500 km in two hours is 208 m/s: faster than the limit, yet real.
        let landed = 2 * 3600 * 1000;
        for (i, verdict) in [
            Verdict::Drop(Reason::SpeedJump),
            Verdict::Drop(Reason::SpeedJump),
            Verdict::Live,
            Verdict::Live,
        ]
        .into_iter()
        .enumerate()
        {
            let taxi = fix(landed + 5_000 * i as i64, 1_500_000.0 + 20.0 * i as f64);
            assert_eq!(f.check(&dev(), &taxi, None), verdict, "fix {i}");
        }
    }

    #[test]
    fn speed_jump_keeps_dropping_outliers_that_disagree() {
        let mut f = filters();
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        // Outliers 50 km north and south in turn are no consistent run.
        for i in 1..=6_i64 {
            let side = if i % 2 == 0 { 1.0 } else { -1.0 };
            assert_eq!(
                f.check(&dev(), &fix(i * 1_000, side * 50_000.0), None),
                Verdict::Drop(Reason::SpeedJump),
                "outlier {i}"
            );
        }
        // A plausible fix breaks a run: two outliers, a real fix, two outliers.
        assert_eq!(f.check(&dev(), &fix(7_000, 5.0), None), Verdict::Live);
        for (ms, verdict) in [
            (8_000, Verdict::Drop(Reason::SpeedJump)),
            (9_000, Verdict::Drop(Reason::SpeedJump)),
            (10_000, Verdict::Live),
            (11_000, Verdict::Drop(Reason::SpeedJump)),
            (12_000, Verdict::Drop(Reason::SpeedJump)),
        ] {
            let north = if verdict == Verdict::Live {
                10.0
            } else {
                50_000.0
            };
            assert_eq!(f.check(&dev(), &fix(ms, north), None), verdict, "at {ms}");
        }
        assert_eq!(state(&f).live, Some(Point::of(&fix(10_000, 10.0))));
    }

    #[test]
    fn speed_jump_drop_keeps_the_live_fix_and_the_duplicate_ring() {
        let mut f = filters();
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Live);
        let before = state(&f);
        assert_eq!(
            f.check(&dev(), &fix(1_000, 50_000.0), None),
            Verdict::Drop(Reason::SpeedJump)
        );
        let after = state(&f);
        assert_eq!((after.live, &after.recent), (before.live, &before.recent));
        assert_eq!(after.suspects.len(), 1);
        // Not remembered as accepted: the same time may still come in valid.
        assert_eq!(f.check(&dev(), &fix(1_000, 5.0), None), Verdict::Live);
    }

    #[test]
    fn live_fix_taken_with_an_untrusted_clock_does_not_pin_the_device() {
        let mut f = filters();
        let year_ms = 365 * 24 * 3600 * 1000;
        // A receiver with a wrong date, while the gateway clock was not trusted.
        assert_eq!(f.check(&dev(), &fix(year_ms, 0.0), None), Verdict::Live);
        assert_eq!(f.check(&dev(), &fix(0, 0.0), None), Verdict::Historic);
        // Once the clock is trusted, correct fixes are live again.
        let now = Some(time(2_000));
        assert_eq!(f.check(&dev(), &fix(1_000, 0.0), now), Verdict::Live);
        assert_eq!(f.check(&dev(), &fix(2_000, 10.0), now), Verdict::Live);
    }
}
