//! Every device's state machine against the current fences: what the
//! pipeline's writer holds.

use std::collections::HashMap;
use std::sync::Arc;

use crate::fix::{DeviceId, Geofence, Position};

use super::{FenceSet, Machine, Options, Zones};

/// The fences and the hysteresis in force; replaced whole on reload.
#[derive(Debug, Default)]
pub struct Rules {
    /// The fences, indexed.
    pub fences: FenceSet,
    /// How fixes are judged against them.
    pub options: Options,
}

/// Devices' machines. Only devices that are, or were, in or near a fence
/// (or in the middle of a batch of late fixes near one) have one.
#[derive(Debug)]
pub struct Tracker {
    /// `None` until a set of fences has loaded: until then fixes are not
    /// judged at all, so that stored zones are neither left nor confirmed.
    rules: Option<Arc<Rules>>,
    machines: HashMap<DeviceId, Machine>,
    scratch: Vec<usize>,
    events: Vec<Geofence>,
}

impl Tracker {
    /// A tracker with no device state yet.
    pub fn new(rules: Option<Arc<Rules>>) -> Self {
        Self {
            rules,
            machines: HashMap::new(),
            scratch: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The rules in force, if any have loaded.
    pub fn rules(&self) -> Option<&Arc<Rules>> {
        self.rules.as_ref()
    }

    /// Puts new rules in force. Devices keep their state by fence id: a
    /// device inside a fence whose shape changed stays inside until the new
    /// shape's exit rule says otherwise (the same hysteresis); a removed
    /// fence is dropped from the device's zones without an event.
    pub fn set_rules(&mut self, rules: Option<Arc<Rules>>) {
        self.rules = rules;
    }

    /// Resumes a device from its stored zones.
    pub fn seed(&mut self, device: DeviceId, zones: Zones) {
        if !zones.is_empty() {
            self.machines.insert(device, Machine::new(zones));
        }
    }

    /// Drops a device's state from memory (it stays in the store).
    pub fn forget(&mut self, device: &DeviceId) {
        self.machines.remove(device);
    }

    /// The live zones of a device, if it has any.
    pub fn zones(&self, device: &DeviceId) -> Option<&Zones> {
        self.machines.get(device).map(Machine::zones)
    }

    /// Judges an accepted position, live or historic. Returns the events it
    /// causes, and for a live one that changed the device's zones, their new
    /// stored form.
    pub fn observe(
        &mut self,
        position: &Position,
    ) -> (std::vec::Drain<'_, Geofence>, Option<Vec<u8>>) {
        self.events.clear();
        let mut persist = None;
        let Some(rules) = &self.rules else {
            return (self.events.drain(..), None);
        };
        if !rules.fences.is_empty() || self.machines.contains_key(&position.device) {
            let machine = self.machines.entry(position.device.clone()).or_default();
            if machine.observe(position, rules, &mut self.scratch, &mut self.events) {
                persist = Some(machine.zones().encode());
            }
            if machine.is_idle() {
                self.machines.remove(&position.device);
            }
        }
        (self.events.drain(..), persist)
    }
}
