//! Accounting API client: runs a tool's exact HTTP request (a JSON body, or a
//! multipart upload of a stored file) with a timeout and a cap on the
//! response size.

use std::time::Duration;

use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};

use crate::engine::text::into_storable;
use crate::request::ToolRequest;

/// Errors of the Accounting API (an error status is not one: it is a response).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountingError {
    /// The response body exceeded the size cap.
    #[error("the response is larger than {limit_bytes} bytes")]
    TooLarge {
        /// The cap.
        limit_bytes: usize,
    },
    /// The request timed out.
    #[error("the Accounting API did not answer in time")]
    Timeout,
    /// The request did not complete.
    #[error("cannot reach the Accounting API")]
    Transport(#[source] reqwest::Error),
    /// The request could not be built (bad method or URL).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl From<reqwest::Error> for AccountingError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else {
            Self::Transport(e)
        }
    }
}

/// A response of the Accounting API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountingResponse {
    /// HTTP status.
    pub status: u16,
    /// Body, lossily decoded as UTF-8.
    pub body: String,
    /// Body size in bytes.
    pub bytes: usize,
    /// Its headers, names in lowercase.
    pub headers: Vec<(String, String)>,
}

impl AccountingResponse {
    /// The value of a header (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// What a create made: the last path segment of its `Location`.
    pub fn created_id(&self) -> Option<&str> {
        let location = self.header("location")?;
        let path = location.split(['?', '#']).next()?;
        path.trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
    }
}

/// One tenant's Accounting API: where it is and the credential to use.
#[derive(Clone)]
pub struct AccountingTarget {
    base_url: String,
    token: SecretString,
}

impl std::fmt::Debug for AccountingTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountingTarget")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AccountingTarget {
    /// The API at `base_url`, called with `token`.
    pub fn new(base_url: &str, token: SecretString) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

/// Client of the tenants' Accounting APIs.
#[derive(Debug, Clone)]
pub struct AccountingClient {
    http: reqwest::Client,
    max_response_bytes: usize,
}

impl AccountingClient {
    /// A client over `http` that reads at most `max_response_bytes` of a response.
    pub fn new(http: reqwest::Client, max_response_bytes: usize) -> Self {
        Self {
            http,
            max_response_bytes,
        }
    }

    /// Sends the request; a multipart upload sends `file` (the bytes of
    /// `request.file`) beside its body's fields.
    pub async fn send(
        &self,
        target: &AccountingTarget,
        request: &ToolRequest,
        file: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<AccountingResponse, AccountingError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| AccountingError::InvalidRequest(request.method.clone()))?;
        let mut builder = self
            .http
            .request(method, format!("{}{}", target.base_url, request.path))
            .bearer_auth(target.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout);
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        builder = match (&request.file, file) {
            (Some(meta), Some(bytes)) => {
                builder.multipart(form(request.body.as_ref(), meta, bytes)?)
            }
            (Some(_), None) => {
                return Err(AccountingError::InvalidRequest(
                    "an upload without its file".to_owned(),
                ));
            }
            (None, _) => match &request.body {
                Some(body) => builder.json(body),
                None => builder,
            },
        };
        let response = builder.send().await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes as u64)
        {
            return Err(AccountingError::TooLarge {
                limit_bytes: self.max_response_bytes,
            });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(AccountingError::TooLarge {
                    limit_bytes: self.max_response_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(AccountingResponse {
            status,
            bytes: body.len(),
            body: into_storable(String::from_utf8_lossy(&body).into_owned()),
            headers,
        })
    }
}

/// A multipart form: the body's fields as text parts, then the file.
fn form(
    fields: Option<&serde_json::Value>,
    meta: &crate::request::FileRef,
    bytes: Vec<u8>,
) -> Result<reqwest::multipart::Form, AccountingError> {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in fields
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
    {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        form = form.text(name.clone(), text);
    }
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(meta.filename.clone())
        .mime_str(&meta.content_type)
        .map_err(|e| AccountingError::InvalidRequest(e.to_string()))?;
    Ok(form.part("file", part))
}
