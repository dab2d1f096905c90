//! The loaded fences and an R-tree over their bounding boxes, so that each
//! fix is tested exactly only against the few fences near it.

use std::collections::HashMap;
use std::ops::ControlFlow;

use rstar::RTree;
use rstar::primitives::{GeomWithData, Rectangle};

use crate::fix::FenceId;

use super::fence::Fence;
use super::shape::{Envelope, reach_box};

/// A box in the tree, with the index of its fence.
type Entry = GeomWithData<Rectangle<[f64; 2]>, usize>;

/// Two fences with one id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("fence id {0} is used twice")]
pub struct DuplicateFence(pub FenceId);

/// An immutable set of fences, indexed; replaced whole on reload.
#[derive(Debug, Default)]
pub struct FenceSet {
    fences: Vec<Fence>,
    by_id: HashMap<FenceId, usize>,
    tree: RTree<Entry>,
}

impl FenceSet {
    /// Indexes fences; their ids must be unique.
    pub fn new(fences: Vec<Fence>) -> Result<Self, DuplicateFence> {
        let mut by_id = HashMap::with_capacity(fences.len());
        let mut entries = Vec::with_capacity(fences.len());
        for (i, fence) in fences.iter().enumerate() {
            if by_id.insert(fence.id.clone(), i).is_some() {
                return Err(DuplicateFence(fence.id.clone()));
            }
            for rect in rectangles(fence.shape.envelope()).into_iter().flatten() {
                entries.push(GeomWithData::new(rect, i));
            }
        }
        Ok(Self {
            fences,
            by_id,
            tree: RTree::bulk_load(entries),
        })
    }

    /// The fences, in load order.
    pub fn fences(&self) -> &[Fence] {
        &self.fences
    }

    /// How many fences there are.
    pub fn len(&self) -> usize {
        self.fences.len()
    }

    /// True when there are no fences.
    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }

    /// The fence with this id.
    pub fn get(&self, id: &FenceId) -> Option<&Fence> {
        self.by_id.get(id).map(|&i| &self.fences[i])
    }

    /// Puts into `out` (cleared first, sorted, without repeats) the index of
    /// every fence whose box comes within `reach` metres of a point: a
    /// superset of the fences the point is inside or within `reach` of.
    pub fn near(&self, lat: f64, lon: f64, reach: f64, out: &mut Vec<usize>) {
        out.clear();
        for rect in rectangles(reach_box(lat, lon, reach)).into_iter().flatten() {
            let query = rstar::RTreeObject::envelope(&rect);
            // The visitor form walks the tree recursively; the iterator
            // pushes every child of every node it opens onto a stack.
            let _: ControlFlow<()> =
                self.tree
                    .locate_in_envelope_intersecting_int(&query, |entry| {
                        out.push(entry.data);
                        ControlFlow::Continue(())
                    });
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// A box as rectangles within longitudes `[-180, 180]`: a box reaching past
/// the antimeridian is split, its far part moved by 360°. In an array, not
/// a `Vec`: every fix asks, and an allocation cost as much as the lookup.
fn rectangles(e: Envelope) -> [Option<Rectangle<[f64; 2]>>; 3] {
    let rect = |w: f64, east: f64| Rectangle::from_corners([w, e.lat_min], [east, e.lat_max]);
    if e.lon_max - e.lon_min >= 360.0 {
        return [Some(rect(-180.0, 180.0)), None, None];
    }
    [
        Some(rect(e.lon_min.max(-180.0), e.lon_max.min(180.0))),
        (e.lon_max > 180.0).then(|| rect(-180.0, e.lon_max - 360.0)),
        (e.lon_min < -180.0).then(|| rect(e.lon_min + 360.0, 180.0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::geofence::shape::{Outline, Shape};

    fn circle(id: &str, lat: f64, lon: f64, radius_m: f64) -> Fence {
        Fence {
            id: FenceId::new(id).unwrap(),
            name: None,
            shape: Shape::new(Outline::Circle { lat, lon, radius_m }).unwrap(),
            speed_limit: None,
            dwell: None,
            properties: Default::default(),
        }
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let err = FenceSet::new(vec![
            circle("a", 0.0, 0.0, 10.0),
            circle("a", 1.0, 1.0, 10.0),
        ]);
        assert_eq!(err.unwrap_err(), DuplicateFence(FenceId::new("a").unwrap()));
    }

    #[test]
    fn near_finds_exactly_the_fences_whose_box_is_within_reach() {
        let set = FenceSet::new(vec![
            circle("here", 52.0, 5.0, 100.0),
            circle("next", 52.0, 5.01, 100.0), // ~685 m east
            circle("far", 53.0, 5.0, 100.0),
        ])
        .unwrap();
        let mut out = Vec::new();
        set.near(52.0, 5.0, 10.0, &mut out);
        assert_eq!(out, vec![0]);
        set.near(52.0, 5.0, 700.0, &mut out);
        assert_eq!(out, vec![0, 1]);
    }

    #[test]
    fn near_works_across_the_antimeridian_from_either_side() {
        let set = FenceSet::new(vec![
            circle("east", -17.0, 179.999, 500.0),
            circle("west", -17.0, -179.999, 500.0),
        ])
        .unwrap();
        let mut out = Vec::new();
        for lon in [180.0, -180.0, 179.9995, -179.9995] {
            set.near(-17.0, lon, 10.0, &mut out);
            assert_eq!(out, vec![0, 1], "at {lon}");
        }
        // The east circle's box reaches ~0.0047° either side of its centre.
        set.near(-17.0, 179.995, 10.0, &mut out);
        assert_eq!(out, vec![0]);
        set.near(-17.0, 179.99, 10.0, &mut out);
        assert_eq!(out, Vec::<usize>::new());
    }
}
