//! Worker managers: orchestrate one use case each.

pub mod conversation;
pub mod execution;
pub mod relay;
pub mod review;
pub mod tools;
