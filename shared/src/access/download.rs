//! Fetches a file a chat platform holds, within a size cap, only from the
//! platform's own file host (a platform credential never goes elsewhere).

use std::time::Duration;

use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The file is larger than the cap.
    #[error("larger than {}", size_text(*.limit_bytes))]
    TooLarge {
        /// The cap.
        limit_bytes: u64,
    },
    /// The URL is not on the platform's file host.
    #[error("not on the platform's file host")]
    NotAllowed,
    /// The platform answered that it will not give it (a 4xx).
    #[error("the platform refused it (HTTP {0})")]
    Refused(u16),
    /// The platform could not be reached or failed (try again later).
    #[error("the platform could not be reached: {0}")]
    Unavailable(String),
}

impl DownloadError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A size as people read it: whole MiB from 1 MiB up, else whole KiB.
fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Whether `url` is under `base` (same scheme, host and port, and path
/// prefix).
pub fn is_under(url: &str, base: &str) -> bool {
    let (Ok(url), Ok(base)) = (reqwest::Url::parse(url), reqwest::Url::parse(base)) else {
        return false;
    };
    url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.path().starts_with(base.path())
        && url.username().is_empty()
        && url.password().is_none()
}

/// GETs `url` (with `bearer`, if given) and reads at most `max_bytes`.
/// Errors never name the URL: a Telegram file URL holds the bot token.
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&SecretString>,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Vec<u8>, DownloadError> {
    let unavailable = |e: reqwest::Error| DownloadError::Unavailable(e.without_url().to_string());
    let mut request = http.get(url).timeout(timeout);
    if let Some(token) = bearer {
        request = request.bearer_auth(token.expose_secret());
    }
    let response = request.send().await.map_err(unavailable)?;
    let status = response.status().as_u16();
    match status {
        200..=299 => {}
        400..=499 if status != 408 && status != 429 => return Err(DownloadError::Refused(status)),
        _ => return Err(DownloadError::Unavailable(format!("HTTP {status}"))),
    }
    let too_large = DownloadError::TooLarge {
        limit_bytes: max_bytes,
    };
    if response.content_length().is_some_and(|len| len > max_bytes) {
        return Err(too_large);
    }
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(unavailable)?;
        if (bytes.len() + chunk.len()) as u64 > max_bytes {
            return Err(too_large);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_urls_under_the_platforms_file_host_are_fetched() {
        let base = "https://files.slack.com/";
        assert!(is_under(
            "https://files.slack.com/files-pri/T1-F1/r.jpg",
            base
        ));
        for other in [
            "https://files.slack.com.evil.test/r.jpg",
            "http://files.slack.com/r.jpg",
            "https://evil.test/?u=https://files.slack.com/",
            "https://user@files.slack.com/r.jpg",
            "https://files.slack.com:8443/r.jpg",
            "not a url",
        ] {
            assert!(!is_under(other, base), "{other}");
        }
        assert!(is_under(
            "http://127.0.0.1:4000/files/r.jpg",
            "http://127.0.0.1:4000/files/"
        ));
        assert!(!is_under(
            "http://127.0.0.1:4000/api/x",
            "http://127.0.0.1:4000/files/"
        ));
    }
}
