//! One integration binary for all end-to-end tests (keeps link time down).

mod admin;
mod agents;
mod browser;
mod e2e_discord;
mod e2e_limits;
mod e2e_proposals;
mod e2e_reliability;
mod e2e_slack;
mod e2e_slack_rejects;
mod e2e_telegram;
mod e2e_turn;
mod exactly_once;
mod fakes;
mod faults;
mod harness;
mod members;
mod observability;
mod page;
mod receipts;
mod sandbox;
mod security;
mod store;
mod tenants;
mod webhook_corpus;
