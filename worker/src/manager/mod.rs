//! Worker managers: orchestrate one use case each.

pub mod accounts;
pub mod conversation;
pub mod execution;
pub mod relay;
pub mod review;
pub mod runs;
pub mod tools;
pub mod triggers;
