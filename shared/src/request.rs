//! The exact requests a tool call makes of the Accounting API: what a read
//! sends at once, and the plan of writes a proposal holds until it is
//! approved.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An exact HTTP request against the Accounting API, relative to its base URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRequest {
    /// The tool that made it.
    pub tool: String,
    /// The API operation (`operationId`).
    pub operation: String,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path with every parameter filled in and percent-encoded (a write
    /// step may leave `{name}` for an id an earlier step creates).
    pub path: String,
    /// Query parameters, in a stable order.
    pub query: Vec<(String, String)>,
    /// JSON body, or the fields of a multipart form besides its file.
    pub body: Option<Value>,
    /// The file of a multipart form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRef>,
}

/// A stored file a request uploads, bound by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// SHA-256 of its bytes, hex: the file is fetched by it and checked
    /// against it.
    pub sha256: String,
    /// The name it is uploaded with.
    pub filename: String,
    /// Its sniffed type (`image/png`, `application/pdf`, …).
    pub content_type: String,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// Where an id an earlier step created goes in a later step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillTarget {
    /// A `{name}` path parameter.
    PathParam(String),
    /// A body field, by JSON pointer (`/supplierId`): the id as a number.
    BodyField(String),
}

/// An id one step created, used by a later one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// The step (index) that creates it.
    pub from_step: usize,
    /// Where it goes.
    pub into: FillTarget,
}

/// One write of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteStep {
    /// The request, as approved.
    pub request: ToolRequest,
    /// Ids of earlier steps it needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fill: Vec<Fill>,
}

/// What a proposal writes once approved: its steps in order (find or
/// create a contact, the write itself, attach its receipt), each made
/// exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WritePlan {
    /// The write tool the model called.
    pub tool: String,
    /// The API the steps call.
    pub api: String,
    /// The model's arguments, as checked (patterns and amounts are read
    /// from them).
    pub arguments: Value,
    /// The writes, in order.
    pub steps: Vec<WriteStep>,
}

impl WritePlan {
    /// The files the plan uploads.
    pub fn files(&self) -> impl Iterator<Item = &FileRef> {
        self.steps.iter().filter_map(|s| s.request.file.as_ref())
    }
}
