//! Metric labels made from names that come from outside (device ids in
//! topics and payloads, MQTT usernames): each name keeps its own label until
//! the set is full, then the rest share `other`, so that a flood of invented
//! names cannot grow the metrics registry without bound.

use std::collections::HashSet;

/// The label of names past the limit.
pub const OTHER: &str = "other";

/// A bounded set of names that have a label of their own.
#[derive(Debug)]
pub struct BoundedLabels {
    named: HashSet<String>,
    max: usize,
}

impl BoundedLabels {
    /// At most `max` names get a label of their own.
    pub fn new(max: usize) -> Self {
        Self {
            named: HashSet::new(),
            max,
        }
    }

    /// The label for `name`: itself, or [`OTHER`] once the set is full.
    pub fn label(&mut self, name: &str) -> String {
        if self.named.contains(name) {
            return name.to_owned();
        }
        if self.named.len() < self.max {
            self.named.insert(name.to_owned());
            return name.to_owned();
        }
        OTHER.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_limit_share_one_label_and_known_ones_keep_theirs() {
        let mut labels = BoundedLabels::new(2);
        assert_eq!(labels.label("a"), "a");
        assert_eq!(labels.label("b"), "b");
        assert_eq!(labels.label("c"), OTHER);
        assert_eq!(labels.label("a"), "a");
    }
}
