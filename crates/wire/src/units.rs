//! Version 2's units: per batch and predicted field, the step of the grid
//! the values lie on, so that the columns carry grid steps, not wire units.
//!
//! A receiver's values are seldom free numbers: NMEA gives latitude and
//! longitude in minutes with a fixed number of decimals (1e-4' is 16⅔ units
//! of 1e-7°) and speed in tenths of a knot (5.144 units of 0.01 m/s); an
//! HTTP tracker sends whole seconds or five decimals of a degree. Sent in
//! wire units, every residual carries the rounding of that grid as noise;
//! in grid steps it does not, and the numbers are smaller.
//!
//! A step is a fraction `num / den ≥ 1` of wire units: a value `v` travels
//! as `k = round(v · den / num)`, and comes back as
//! `round(k · num / den) + fix`, where `fix` (almost always 0) is listed
//! apart. So any grid is lossless; the encoder picks, from its candidates,
//! the coarsest that needs few fixes.

use serde::{Deserialize, Serialize};

use super::predict::Field;

/// A grid step of `num / den` wire units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Numerator, at least `den`.
    pub num: u64,
    /// Denominator, at least 1.
    pub den: u64,
}

/// The wire unit itself: values travel unchanged.
pub const NATIVE: Unit = Unit { num: 1, den: 1 };

impl Default for Unit {
    /// [`NATIVE`].
    fn default() -> Self {
        NATIVE
    }
}

/// Largest numerator or denominator a decoder accepts: bounds the integer
/// arithmetic (values times 2^32 fit an i128 with room to spare).
pub const MAX_TERM: u64 = 1 << 32;

/// `a · b / c` rounded to nearest, halves away from zero; `None` beyond i64.
fn scale(a: i64, b: u64, c: u64) -> Option<i64> {
    let (b, c) = (i128::from(b), i128::from(c));
    let n = i128::from(a).unsigned_abs() as i128 * b;
    let q = (2 * n + c) / (2 * c);
    i64::try_from(if a < 0 { -q } else { q }).ok()
}

impl Unit {
    /// Whether a decoder takes this unit.
    pub fn valid(self) -> bool {
        self.den >= 1 && self.num >= self.den && self.num <= MAX_TERM
    }

    /// The grid steps of `value` (nearest), and the fix that makes it exact.
    pub fn steps(self, value: i64) -> (i64, i64) {
        let k = scale(value, self.den, self.num).unwrap_or(0);
        let back = self.value(k).unwrap_or(0);
        (k, value.wrapping_sub(back))
    }

    /// The value of `k` grid steps before its fix; `None` beyond i64.
    pub fn value(self, k: i64) -> Option<i64> {
        scale(k, self.num, self.den)
    }
}

/// The grids an encoder tries for a field, coarsest first. Not part of the
/// format: a decoder takes any valid unit.
fn candidates(field: Field) -> &'static [Unit] {
    match field {
        // Whole seconds, tenths, hundredths.
        Field::Time => &[
            Unit { num: 1000, den: 1 },
            Unit { num: 100, den: 1 },
            Unit { num: 10, den: 1 },
        ],
        // NMEA's minutes with 0 to 5 decimals (1e7 / (60 · 10^d) units),
        // then decimal degrees with 0 to 6 decimals.
        Field::Lat | Field::Lon => &[
            Unit {
                num: 500_000,
                den: 3,
            },
            Unit {
                num: 50_000,
                den: 3,
            },
            Unit { num: 5_000, den: 3 },
            Unit { num: 500, den: 3 },
            Unit { num: 50, den: 3 },
            Unit { num: 5, den: 3 },
            Unit {
                num: 100_000,
                den: 1,
            },
            Unit {
                num: 10_000,
                den: 1,
            },
            Unit { num: 1_000, den: 1 },
            Unit { num: 100, den: 1 },
            Unit { num: 10, den: 1 },
        ],
        // Knots, tenths of a knot (1852 / 36 and 1852 / 360 units),
        // km/h and tenths (100 / 3.6 and 10 / 3.6), m/s and tenths.
        Field::Speed => &[
            Unit { num: 463, den: 9 },
            Unit { num: 250, den: 9 },
            Unit { num: 100, den: 1 },
            Unit { num: 463, den: 90 },
            Unit { num: 25, den: 9 },
            Unit { num: 10, den: 1 },
        ],
        // Whole metres, tenths of HDOP, metres.
        Field::Alt | Field::Hdop | Field::Accuracy => &[Unit { num: 10, den: 1 }],
        // Course goes round a circle of 3600 units: only in those.
        Field::Course | Field::Sats => &[],
    }
}

/// The unit for a batch's `values` of `field`: the first candidate for
/// which at most one value in 32 needs a fix, else [`NATIVE`].
pub fn choose(field: Field, values: &[i64]) -> Unit {
    candidates(field)
        .iter()
        .copied()
        .find(|unit| {
            // Stop at the first fix too many: most candidates fail early.
            let allowed = values.len() / 32;
            !values.is_empty()
                && values
                    .iter()
                    .filter(|&&v| unit.steps(v).1 != 0)
                    .nth(allowed)
                    .is_none()
        })
        .unwrap_or(NATIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmea_minutes_come_back_exactly() {
        let unit = Unit { num: 50, den: 3 };
        // 52°51.0084' = 52.85014°; and one degree south of the equator.
        for (minutes_e4, units) in [(31_710_084i64, 528_501_400i64), (-600_001, -10_000_017)] {
            assert_eq!(unit.steps(units), (minutes_e4, 0));
            assert_eq!(unit.value(minutes_e4), Some(units));
        }
    }

    #[test]
    fn values_off_the_grid_carry_a_fix() {
        let knot_tenths = Unit { num: 463, den: 90 };
        // 4.5 kn is 231.5 units: a receiver's float may give 231 or 232.
        assert_eq!(knot_tenths.steps(232), (45, 0));
        assert_eq!(knot_tenths.steps(231), (45, -1));
        for v in [-7, 0, 1, 999_999_937, i64::from(u32::MAX)] {
            let (k, fix) = knot_tenths.steps(v);
            assert_eq!(knot_tenths.value(k).map(|b| b + fix), Some(v));
        }
    }

    #[test]
    fn the_coarsest_grid_with_few_fixes_is_chosen() {
        let seconds: Vec<i64> = (0..100).map(|i| 1_700_000_000_000 + 1000 * i).collect();
        assert_eq!(choose(Field::Time, &seconds), Unit { num: 1000, den: 1 });
        let mut jittered = seconds.clone();
        jittered[3] += 7;
        jittered[50] += 7;
        jittered[70] += 7;
        jittered[90] += 7;
        assert_eq!(choose(Field::Time, &jittered), NATIVE);
        assert_eq!(choose(Field::Sats, &[1, 2]), NATIVE);
        assert_eq!(choose(Field::Alt, &[]), NATIVE);
    }

    #[test]
    fn units_beyond_the_bounds_are_invalid() {
        assert!(NATIVE.valid());
        assert!(!Unit { num: 1, den: 3 }.valid());
        assert!(!Unit { num: 0, den: 0 }.valid());
        assert!(
            !Unit {
                num: MAX_TERM + 1,
                den: 1
            }
            .valid()
        );
        assert_eq!(
            Unit {
                num: MAX_TERM,
                den: 1
            }
            .value(i64::MAX),
            None
        );
    }
}
