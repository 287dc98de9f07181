//! The cluster layer: nodes find each other, agree on membership and the bucket table.
pub mod peer;
