//! The predictors: what the decoder can guess of a value from what it has
//! already read, so that only the (small) error of the guess is sent.
//!
//! Each device has its own history per field, so interleaved devices do not
//! spoil each other's deltas. A device's first value of a field in a batch is
//! guessed as the latest value of that field in the batch (any device): the
//! fleet shares a clock and a region, so that guess is close too.

use super::quantise::COURSE_TURN;

/// The fields that are predicted, in the order of their columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Milliseconds; second order (a steady rate predicts exactly).
    Time,
    /// 1e-7°; second order (a steady velocity predicts exactly).
    Lat,
    /// 1e-7°; second order.
    Lon,
    /// 0.1 m; first order.
    Alt,
    /// 0.01 m/s; first order.
    Speed,
    /// 0.1°; first order, the difference taken around the circle.
    Course,
    /// 0.01; first order.
    Hdop,
    /// Count; first order.
    Sats,
    /// 0.1 m; first order.
    Accuracy,
}

/// Number of [`Field`]s.
const FIELDS: usize = 9;

impl Field {
    fn second_order(self) -> bool {
        matches!(self, Self::Time | Self::Lat | Self::Lon)
    }
}

/// What a device has sent of one field so far in the batch.
#[derive(Debug, Clone, Copy, Default)]
enum History {
    #[default]
    Nothing,
    /// One value.
    One(i64),
    /// At least two values: the last, and its difference from the one before.
    Two { last: i64, step: i64 },
}

impl History {
    fn after(self, value: i64) -> Self {
        match self {
            Self::Nothing => Self::One(value),
            Self::One(last) | Self::Two { last, .. } => Self::Two {
                last: value,
                step: value.saturating_sub(last),
            },
        }
    }
}

/// Predictor state of one batch, encoder or decoder side alike.
#[derive(Debug, Default)]
pub struct Predictor {
    devices: Vec<[History; FIELDS]>,
    latest: [i64; FIELDS],
}

impl Predictor {
    /// The guess for `device`'s next value of `field`.
    fn guess(&mut self, device: usize, field: Field) -> i64 {
        if self.devices.len() <= device {
            self.devices.resize(device + 1, [History::Nothing; FIELDS]);
        }
        match (self.devices[device][field as usize], field.second_order()) {
            (History::Nothing, _) => self.latest[field as usize],
            (History::One(last), _) | (History::Two { last, .. }, false) => last,
            // Saturating: values are range-checked, so this never saturates
            // in a valid batch, and both sides compute the same guess anyway.
            (History::Two { last, step }, true) => last.saturating_add(step),
        }
    }

    fn record(&mut self, device: usize, field: Field, value: i64) {
        let history = &mut self.devices[device][field as usize];
        *history = history.after(value);
        self.latest[field as usize] = value;
    }

    /// Encoder: the residual to send for `value`, and the state moved on.
    pub fn residual(&mut self, device: usize, field: Field, value: i64) -> i64 {
        let guess = self.guess(device, field);
        self.record(device, field, value);
        let error = value.wrapping_sub(guess);
        if field == Field::Course {
            // The short way round: a turn from 359.9° to 0.1° costs 2, not 3598.
            (error + COURSE_TURN / 2).rem_euclid(COURSE_TURN) - COURSE_TURN / 2
        } else {
            error
        }
    }

    /// Decoder: the value a residual stands for, and the state moved on;
    /// `None` if the residual is impossible (overflow, course out of range).
    pub fn value(&mut self, device: usize, field: Field, residual: i64) -> Option<i64> {
        let guess = self.guess(device, field);
        let value = if field == Field::Course {
            if !(-COURSE_TURN / 2..COURSE_TURN / 2).contains(&residual) {
                return None;
            }
            (guess + residual).rem_euclid(COURSE_TURN)
        } else {
            guess.checked_add(residual)?
        };
        self.record(device, field, value);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_time_and_motion_cost_zero_after_two_values() {
        let mut p = Predictor::default();
        let residuals: Vec<i64> = (0..5)
            .map(|i| p.residual(0, Field::Time, 1_000_000 + 1000 * i))
            .collect();
        assert_eq!(residuals, [1_000_000, 1000, 0, 0, 0]);
    }

    #[test]
    fn a_new_device_starts_from_the_batch_latest_value() {
        let mut p = Predictor::default();
        assert_eq!(p.residual(0, Field::Alt, 120), 120);
        assert_eq!(p.residual(3, Field::Alt, 125), 5);
        assert_eq!(p.residual(0, Field::Alt, 121), 1);
    }

    #[test]
    fn course_differences_take_the_short_way_round() {
        let mut enc = Predictor::default();
        let mut dec = Predictor::default();
        for course in [3599, 1, 1801, 0, 1800, 3599, 1799] {
            let r = enc.residual(0, Field::Course, course);
            assert!((-1800..1800).contains(&r), "{r}");
            assert_eq!(dec.value(0, Field::Course, r), Some(course));
        }
        assert_eq!(dec.value(0, Field::Course, 1800), None);
    }

    #[test]
    fn impossible_residuals_are_refused_not_wrapped() {
        let mut p = Predictor::default();
        assert_eq!(p.value(0, Field::Lat, i64::MAX), Some(i64::MAX));
        assert_eq!(p.value(0, Field::Lat, 1), None);
    }
}
