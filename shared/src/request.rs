//! The exact request a tool call makes of the Accounting API: what a read
//! sends at once, and what a proposal holds until it is approved.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An exact HTTP request against the Accounting API, relative to its base URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRequest {
    /// The tool that made it.
    pub tool: String,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path with every parameter filled in and percent-encoded.
    pub path: String,
    /// Query parameters, in a stable order.
    pub query: Vec<(String, String)>,
    /// JSON body for methods that carry one.
    pub body: Option<Value>,
}
