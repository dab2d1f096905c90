//! The line speed each serial receiver was last found at, so that a port
//! with `baud = "auto"` starts its hunt there after a restart.
//!
//! This is a setting learnt from the hardware, not a record: it lives in a
//! sled tree of its own (`line_speeds`), outside the records' tree and its
//! budget, and a source reaches it only through [`LineSpeeds`].
//!
//! Format (version 1): key = the device id's UTF-8 bytes; value = one
//! version byte `1`, then the rate in bits per second as a big-endian `u32`.
//! A value of another length or version (damage, or a newer fixgate) is
//! ignored with a log line: the hunt then starts at its first rate.

use crate::fix::DeviceId;

use super::StoreError;

/// The tree's name in sled.
const TREE: &[u8] = b"line_speeds";
/// The value layout written now.
const VERSION: u8 = 1;

/// Reads and writes the remembered line speed of serial receivers, and
/// nothing else of the store.
#[derive(Debug, Clone)]
pub struct LineSpeeds {
    tree: sled::Tree,
}

/// Why a stored value was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSpeed {
    /// Not the length of any known layout.
    #[error("{0} bytes, not a known layout")]
    Length(usize),
    /// A layout this version does not know.
    #[error("layout version {0} is unknown")]
    Version(u8),
    /// Zero bits per second.
    #[error("a rate of 0")]
    Zero,
}

impl LineSpeeds {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree(TREE)?,
        })
    }

    /// The rate `device` was last found at. A value that cannot be read is
    /// logged and taken as none: a forgotten rate costs one longer hunt.
    pub fn get(&self, device: &DeviceId) -> Option<u32> {
        let value = match self.tree.get(device.as_str().as_bytes()) {
            Ok(value) => value?,
            Err(err) => {
                tracing::warn!(%device, "cannot read the remembered line speed: {err}");
                return None;
            }
        };
        match decode(&value) {
            Ok(rate) => Some(rate),
            Err(why) => {
                tracing::warn!(%device, "the remembered line speed is ignored: {why}");
                None
            }
        }
    }

    /// Remembers `rate` for `device`. It becomes durable with the store's
    /// next flush, like everything else.
    pub fn set(&self, device: &DeviceId, rate: u32) -> Result<(), StoreError> {
        self.tree
            .insert(device.as_str().as_bytes(), &encode(rate))?;
        Ok(())
    }
}

fn encode(rate: u32) -> [u8; 5] {
    let [a, b, c, d] = rate.to_be_bytes();
    [VERSION, a, b, c, d]
}

fn decode(value: &[u8]) -> Result<u32, BadSpeed> {
    let [version, rate @ ..] = value else {
        return Err(BadSpeed::Length(0));
    };
    if *version != VERSION {
        return Err(BadSpeed::Version(*version));
    }
    let rate = <[u8; 4]>::try_from(rate).map_err(|_| BadSpeed::Length(value.len()))?;
    match u32::from_be_bytes(rate) {
        0 => Err(BadSpeed::Zero),
        rate => Ok(rate),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::store::Store;
    use crate::store::tests::options;

    #[test]
    fn a_rate_survives_a_reopen_per_device() {
        let dir = tempfile::tempdir().unwrap();
        let gps = DeviceId::new("gps-1").unwrap();
        let other = DeviceId::new("gps-2").unwrap();
        {
            let (store, _) = Store::open_in_test(&options(dir.path()));
            let speeds = store.line_speeds().unwrap();
            assert_eq!(speeds.get(&gps), None);
            speeds.set(&gps, 9600).unwrap();
            speeds.set(&gps, 38400).unwrap();
            speeds.set(&other, 4800).unwrap();
            store.flush().unwrap();
        }
        let (store, _) = Store::open_in_test(&options(dir.path()));
        let speeds = store.line_speeds().unwrap();
        assert_eq!(speeds.get(&gps), Some(38400));
        assert_eq!(speeds.get(&other), Some(4800));
        // Not a record: the log and the devices' states know nothing of it.
        assert!(store.reader().devices().unwrap().is_empty());
        assert_eq!(store.reader().oldest().unwrap(), None);
    }

    #[test]
    fn damaged_or_unknown_values_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_in_test(&options(dir.path()));
        let speeds = store.line_speeds().unwrap();
        let gps = DeviceId::new("gps-1").unwrap();
        for value in [
            &[][..],
            &[1, 0, 0, 0x96][..],
            &[2, 0, 0, 0x25, 0x80][..],
            &[1, 0, 0, 0, 0][..],
            &[1, 0, 0, 0x25, 0x80, 0][..],
        ] {
            speeds.tree.insert(gps.as_str(), value).unwrap();
            assert_eq!(speeds.get(&gps), None, "{value:?}");
        }
        speeds
            .tree
            .insert(gps.as_str(), &[1, 0, 0, 0x25, 0x80])
            .unwrap();
        assert_eq!(speeds.get(&gps), Some(9600), "the layout as documented");
    }

    #[test]
    fn values_decode_with_their_reason() {
        assert_eq!(decode(&encode(115_200)), Ok(115_200));
        assert_eq!(decode(&[]), Err(BadSpeed::Length(0)));
        assert_eq!(decode(&[1, 2]), Err(BadSpeed::Length(2)));
        assert_eq!(decode(&[9, 0, 0, 0, 1]), Err(BadSpeed::Version(9)));
        assert_eq!(decode(&[1, 0, 0, 0, 0]), Err(BadSpeed::Zero));
    }
}
