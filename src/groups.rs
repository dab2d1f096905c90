//! Device groups: which fleet or depot a device belongs to, so that feeds
//! (`?group=`) and access tokens (`read_groups`) can be scoped by it.
//!
//! A device's group comes from the configuration (`[[group]]` with patterns
//! of device ids) or, failing that, from where it reports: an MQTT topic
//! pattern's group template, by default the `{fleet}` level of
//! `fleet/{fleet}/device/{device}/fix`. Groups learned from topics are kept in
//! the store (written with the writer's next batch), so they are known again
//! after a restart before the device reports.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use crate::fix::{DeviceId, GroupId};
use crate::util::pattern::Glob;

/// A configured group: a name and the device ids it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRule {
    /// The group.
    pub name: GroupId,
    /// Device id patterns (`bus-*`); a device matching any is in the group.
    pub devices: Vec<Glob>,
}

/// The groups of every device; shared by the intake (which learns them), the
/// writer (which stores them) and the feed (which filters by them).
#[derive(Debug, Default)]
pub struct Groups {
    rules: Vec<GroupRule>,
    learned: RwLock<HashMap<DeviceId, GroupId>>,
    /// Learned since the writer last stored them.
    unsaved: Mutex<Vec<(DeviceId, GroupId)>>,
    max: usize,
}

impl Groups {
    /// Groups from `rules`, learning at most `max` devices' from topics.
    pub fn new(rules: Vec<GroupRule>, max: usize) -> Self {
        Self {
            rules,
            learned: RwLock::new(HashMap::new()),
            unsaved: Mutex::new(Vec::new()),
            max,
        }
    }

    /// Takes in the groups the store kept (at start-up).
    pub fn seed(&self, stored: impl IntoIterator<Item = (DeviceId, GroupId)>) {
        let mut learned = self.learned.write().unwrap_or_else(PoisonError::into_inner);
        for (device, group) in stored {
            if learned.len() >= self.max {
                break;
            }
            learned.insert(device, group);
        }
    }

    /// The group of `device`: the first configured rule it matches, else
    /// the one learned from its topic.
    pub fn of(&self, device: &DeviceId) -> Option<GroupId> {
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.devices.iter().any(|g| g.matches(device.as_str())))
        {
            return Some(rule.name.clone());
        }
        self.learned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(device)
            .cloned()
    }

    /// Notes that `device` reported under `group` (an MQTT topic's); cheap
    /// when nothing changes. Beyond `max` devices new ones are not learned.
    pub fn learn(&self, device: &DeviceId, group: &GroupId) {
        {
            let learned = self.learned.read().unwrap_or_else(PoisonError::into_inner);
            if learned.get(device) == Some(group) {
                return;
            }
            if !learned.contains_key(device) && learned.len() >= self.max {
                return;
            }
        }
        self.learned
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(device.clone(), group.clone());
        self.unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((device.clone(), group.clone()));
    }

    /// What was learned since the last call, for the writer to store.
    pub fn take_unsaved(&self) -> Vec<(DeviceId, GroupId)> {
        std::mem::take(&mut *self.unsaved.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts back what the writer could not store (a full disk), unless newer.
    pub fn restore_unsaved(&self, mut pending: Vec<(DeviceId, GroupId)>) {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(PoisonError::into_inner);
        pending.append(&mut unsaved);
        *unsaved = pending;
    }

    /// Whether any group is configured or was learned (so a `?group=` that
    /// names none can be told apart from one that matches nothing now).
    pub fn knows(&self, group: &GroupId) -> bool {
        self.rules.iter().any(|r| &r.name == group)
            || self
                .learned
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .any(|g| g == group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn group(s: &str) -> GroupId {
        GroupId::new(s).unwrap()
    }

    #[test]
    fn configured_rules_win_over_learned_topics() {
        let groups = Groups::new(
            vec![GroupRule {
                name: group("buses"),
                devices: vec![Glob::new("bus-*").unwrap()],
            }],
            10,
        );
        groups.learn(&id("bus-1"), &group("north"));
        groups.learn(&id("van-1"), &group("north"));
        assert_eq!(groups.of(&id("bus-1")), Some(group("buses")));
        assert_eq!(groups.of(&id("van-1")), Some(group("north")));
        assert_eq!(groups.of(&id("car-1")), None);
        assert!(groups.knows(&group("buses")) && groups.knows(&group("north")));
        assert!(!groups.knows(&group("south")));
        // Each change is saved once.
        groups.learn(&id("van-1"), &group("north"));
        assert_eq!(groups.take_unsaved().len(), 2);
        assert!(groups.take_unsaved().is_empty());
    }

    #[test]
    fn learning_is_bounded() {
        let groups = Groups::new(Vec::new(), 2);
        for i in 0..5 {
            groups.learn(&id(&format!("d{i}")), &group("g"));
        }
        assert_eq!(groups.take_unsaved().len(), 2);
        assert_eq!(groups.of(&id("d4")), None);
    }
}
