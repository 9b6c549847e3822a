//! Worker managers: orchestrate one use case each.

pub mod conversation;
pub mod tools;
