//! A simulated fleet: vehicles that leave a depot, drive a loop of streets and
//! come back to rest, with GPS-like noise. Pure values and plain functions; the
//! demo source turns its fixes into NMEA text (see [`nmea`]) and feeds it through
//! the real decoder, so a demo exercises the same path as a serial receiver.
//! [`publish`] (`fixgate simulate`) sends the same fleet to a broker or an
//! HTTP server as real trackers would, encoded by [`payload`] and timed by
//! [`schedule`].

pub mod nmea;
pub mod payload;
pub mod publish;
pub mod schedule;
pub mod uart;

use std::f64::consts::PI;

use chrono::{DateTime, Utc};

use crate::fix::{Fix, FixMode};

/// Metres per degree of latitude (and of longitude at the equator), close enough
/// for routes a few kilometres across.
const METRES_PER_DEGREE: f64 = 111_320.0;

/// A closed route in metres east/north of the depot, starting and ending there.
#[derive(Debug, Clone)]
struct Route {
    points: Vec<(f64, f64)>,
    /// Distance along the route at each point.
    at: Vec<f64>,
}

impl Route {
    /// A loop of `n` waypoints on a jittered circle of `radius` metres, through the depot.
    fn around_depot(rng: &mut fastrand::Rng, radius: f64, n: usize) -> Self {
        let phase = rng.f64() * 2.0 * PI;
        let mut points = vec![(0.0, 0.0)];
        for i in 0..n {
            let angle = phase + 2.0 * PI * i as f64 / n as f64;
            let r = radius * (0.6 + 0.4 * rng.f64());
            // Street grids: snap each leg to mostly east-west or north-south.
            points.push(((r * angle.sin()).round(), (r * angle.cos()).round()));
        }
        points.push((0.0, 0.0));
        let mut at = vec![0.0];
        for w in points.windows(2) {
            let (a, b) = (w[0], w[1]);
            let last = at.last().copied().unwrap_or(0.0);
            at.push(last + (b.0 - a.0).hypot(b.1 - a.1));
        }
        Self { points, at }
    }

    fn length(&self) -> f64 {
        self.at.last().copied().unwrap_or(0.0)
    }

    /// Position (east, north) and heading in degrees at `distance` along the route.
    fn locate(&self, distance: f64) -> ((f64, f64), f64) {
        let d = distance.clamp(0.0, self.length());
        let i = self
            .at
            .windows(2)
            .position(|w| d <= w[1])
            .unwrap_or(self.points.len().saturating_sub(2));
        let (a, b) = (self.points[i], self.points[i + 1]);
        let leg = self.at[i + 1] - self.at[i];
        let t = if leg > 0.0 {
            (d - self.at[i]) / leg
        } else {
            0.0
        };
        let pos = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        let heading = (b.0 - a.0).atan2(b.1 - a.1).to_degrees().rem_euclid(360.0);
        (pos, heading)
    }
}

/// One simulated vehicle.
#[derive(Debug, Clone)]
struct Vehicle {
    route: Route,
    distance: f64,
    speed: f64,
    cruise: f64,
    heading: f64,
    /// Seconds left parked at the depot.
    parked: f64,
    alt: f64,
    rng: fastrand::Rng,
}

impl Vehicle {
    fn advance(&mut self, dt: f64) {
        if self.parked > 0.0 {
            self.parked -= dt;
            self.speed = 0.0;
            return;
        }
        // Speed wanders around the cruise speed and eases off before the depot.
        let left = self.route.length() - self.distance;
        let target = if left < 150.0 {
            3.0
        } else {
            self.cruise + (self.rng.f64() - 0.5) * 4.0
        };
        self.speed += (target - self.speed).clamp(-2.5 * dt, 1.5 * dt);
        self.speed = self.speed.max(0.0);
        self.distance += self.speed * dt;
        if self.distance >= self.route.length() {
            self.distance = 0.0;
            self.speed = 0.0;
            self.parked = 20.0 + 40.0 * self.rng.f64();
        }
        self.alt += (self.rng.f64() - 0.5) * 0.2;
    }

    /// The fix a receiver on this vehicle would report, with noise.
    fn fix(&mut self, center: (f64, f64), time: DateTime<Utc>) -> Fix {
        let ((east, north), heading) = self.route.locate(self.distance);
        if self.speed > 0.5 {
            self.heading = heading;
        }
        // Sum of uniforms: a cheap bell curve of about a metre.
        let mut noise = || (0..3).map(|_| self.rng.f64() - 0.5).sum::<f64>();
        let (east, north) = (east + noise(), north + noise());
        let lat = center.0 + north / METRES_PER_DEGREE;
        let lon = center.1 + east / (METRES_PER_DEGREE * center.0.to_radians().cos());
        let sats = 8 + self.rng.u8(0..6);
        Fix {
            time,
            lat,
            lon,
            alt: Some(self.alt),
            speed: Some(self.speed),
            course: Some(self.heading),
            hdop: Some(0.7 + self.rng.f64() * 0.6),
            sats: Some(sats),
            mode: Some(FixMode::ThreeD),
            accuracy: None,
        }
    }
}

/// A fleet of vehicles around one depot.
#[derive(Debug, Clone)]
pub struct Fleet {
    center: (f64, f64),
    vehicles: Vec<Vehicle>,
}

impl Fleet {
    /// `count` vehicles around the depot at `center` (lat, lon), reproducible from `seed`.
    pub fn new(count: usize, center: (f64, f64), seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let vehicles = (0..count)
            .map(|_| {
                let mut own = rng.fork();
                let radius = 800.0 + 2500.0 * own.f64();
                let waypoints = 5 + own.usize(0..5);
                let route = Route::around_depot(&mut own, radius, waypoints);
                // Start spread along the route so the demo moves at once.
                let distance = route.length() * own.f64();
                Vehicle {
                    distance,
                    speed: 8.0,
                    cruise: 7.0 + 8.0 * own.f64(),
                    heading: 0.0,
                    parked: 0.0,
                    alt: 2.0 + 20.0 * own.f64(),
                    route,
                    rng: own,
                }
            })
            .collect();
        Self { center, vehicles }
    }

    /// Moves every vehicle on by `dt` seconds and returns each one's fix at `time`.
    pub fn step(&mut self, dt: f64, time: DateTime<Utc>) -> Vec<Fix> {
        let center = self.center;
        self.vehicles
            .iter_mut()
            .map(|v| {
                v.advance(dt);
                v.fix(center, time)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn metres(a: &Fix, b: &Fix) -> f64 {
        let dy = (a.lat - b.lat) * METRES_PER_DEGREE;
        let dx = (a.lon - b.lon) * METRES_PER_DEGREE * a.lat.to_radians().cos();
        dx.hypot(dy)
    }

    #[test]
    fn vehicles_move_plausibly_and_stay_near_the_depot() {
        let center = (52.0907, 5.1214);
        let mut fleet = Fleet::new(5, center, 7);
        let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap();
        let mut last = fleet.step(1.0, t0);
        let mut moved = [0.0; 5];
        for s in 1..600 {
            let now = fleet.step(1.0, t0 + chrono::Duration::seconds(s));
            for (i, (a, b)) in last.iter().zip(&now).enumerate() {
                let d = metres(a, b);
                // Never faster than a city vehicle plus noise.
                assert!(d < 25.0, "vehicle {i} jumped {d} m");
                moved[i] += d;
                assert!(b.validate().is_ok());
                let from_depot = metres(
                    b,
                    &Fix {
                        lat: center.0,
                        lon: center.1,
                        ..b.clone()
                    },
                );
                assert!(from_depot < 4000.0, "vehicle {i} strayed {from_depot} m");
            }
            last = now;
        }
        assert!(moved.iter().all(|&m| m > 1000.0), "{moved:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_fleet() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let a = Fleet::new(3, (0.0, 0.0), 1).step(1.0, t);
        let b = Fleet::new(3, (0.0, 0.0), 1).step(1.0, t);
        assert_eq!(a, b);
    }
}
