//! Resource access: one client per external system, in the domain's words.
//! All SQL, Redis commands and outbound HTTP live here.

pub mod accounting;
pub mod discord;
pub mod download;
pub mod llm;
pub mod queue;
pub mod slack;
pub mod store;
pub mod telegram;

/// Builds an outbound HTTP client with the given overall timeout.
pub fn http_client(timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(std::time::Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}
