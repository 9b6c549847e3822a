//! Gateway managers: orchestrate one use case each.

pub mod delivery;
pub mod files;
pub mod ingest;
pub mod page;
pub mod presence;
pub mod review_desk;
