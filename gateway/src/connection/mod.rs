//! Long-lived platform connections: the Discord gateway WebSocket and
//! Telegram long polling. Each translates platform events into
//! [`InboundMessage`](crate::manager::ingest::InboundMessage)s for the IngestManager.

pub mod discord;
pub mod telegram;
