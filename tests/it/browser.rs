//! A real browser for the chat page's test: Debian's headless Chromium,
//! driven through ChromeDriver (W3C WebDriver) with fantoccini.
//! `scripts/test` installs both (packages `chromium`, `chromium-driver`).

use std::time::Duration;

use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};

use tests::process::free_port;

/// Where Debian puts ChromeDriver and Chromium.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium session; its ChromeDriver is killed when dropped.
pub struct Browser {
    driver: Child,
    /// The WebDriver session.
    pub client: Client,
    /// The profile directory, removed when the browser closes.
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts ChromeDriver on a free port and opens a session of a fresh,
    /// headless Chromium that reaches nothing but this machine.
    pub async fn start() -> Self {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {CHROMEDRIVER} ({e}): install Debian's chromium and chromium-driver (scripts/test does)")
            });
        let profile = std::env::temp_dir().join(format!("ae-chromium-{}", uuid::Uuid::new_v4()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display())],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object");
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Self {
                        driver,
                        client,
                        profile,
                    };
                }
                Err(e) => last = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no WebDriver session at {url}: {last:?}");
    }

    /// The text of the element `locator` finds, once there.
    pub async fn text_of(&self, locator: Locator<'_>) -> String {
        self.fresh(locator, async |e| e.text().await).await
    }

    /// Clicks the element `locator` finds, once there.
    pub async fn click(&self, locator: Locator<'_>) {
        self.fresh(locator, async |e| e.click().await).await;
    }

    /// Does `act` on the element `locator` finds (waiting up to 30 s for
    /// it), finding it again when the page re-rendered it in between: the
    /// page redraws its view on every update.
    async fn fresh<T>(
        &self,
        locator: Locator<'_>,
        act: impl AsyncFn(fantoccini::elements::Element) -> Result<T, CmdError>,
    ) -> T {
        for _ in 0..20 {
            let element = self
                .client
                .wait()
                .at_most(Duration::from_secs(30))
                .for_element(locator)
                .await
                .unwrap_or_else(|e| panic!("no element {locator:?}: {e}"));
            match act(element).await {
                Ok(out) => return out,
                Err(e) if e.is_stale_element_reference() => {}
                Err(e) => panic!("{locator:?}: {e}"),
            }
        }
        panic!("{locator:?} was re-rendered every time it was found");
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
