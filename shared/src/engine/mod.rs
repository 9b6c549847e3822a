//! Engines: pure decisions and transformations. No I/O, no async, no clock
//! reads: time and randomness come in as arguments.

pub mod chunk;
pub mod cost;
pub mod execution;
pub mod files;
pub mod member;
pub mod pace;
pub mod prompt;
pub mod proposal;
pub mod read;
pub mod retry;
pub mod review;
pub mod review_clock;
pub mod route;
pub mod text;
pub mod tool;
pub mod turn;
