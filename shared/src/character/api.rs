//! The APIs character tools call: an OpenAPI document and how Automate-E
//! uses it, in `characters/apis/<name>.toml` next to the document.
//!
//! ```toml
//! spec = "fiken.yaml"
//! company_parameter = "companySlug"
//! contact_operation = "createContact"
//!
//! [paging]
//! page = "page"
//! size = "pageSize"
//! max_size = 100
//! page_count_header = "Fiken-Api-Page-Count"
//! result_count_header = "Fiken-Api-Result-Count"
//!
//! [confirm.createPurchase]
//! list = "getPurchases"
//! query = { date = "/date" }
//! id = "purchaseId"
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::{CharacterError, MAX_CHARACTER_FILE_BYTES};
use crate::openapi::{ApiSpec, Operation, ParamIn};

/// Largest accepted API document, in bytes.
pub const MAX_SPEC_BYTES: u64 = 8 * 1024 * 1024;

/// How a list operation is paged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// The page-number query parameter (pages count from 0).
    pub page: String,
    /// The page-size query parameter.
    pub size: String,
    /// The largest page size the API serves.
    pub max_size: u32,
    /// The response header holding the number of pages.
    pub page_count_header: String,
    /// The response header holding the number of results.
    pub result_count_header: String,
}

/// How the worker finds out whether a create it sent was made, when it
/// did not get the answer: the list that would show it, filtered by
/// values of the create's body, and the field that identifies an item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// The list operation (GET) that shows what the create made. Its path
    /// parameters are the create's.
    pub list: String,
    /// Query parameters of the list, each a JSON pointer into the create's
    /// body (`/date`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// The field of a listed item that identifies it.
    pub id: String,
    /// The body fields (pointers) a listed item must share with the create
    /// to be what it made; empty: every field both have. A multipart
    /// create (a file) is matched by being new, not by its fields.
    #[serde(default, rename = "match")]
    pub match_fields: Vec<String>,
    /// An item already there that matches is used instead of creating
    /// one (find or create: contacts).
    #[serde(default)]
    pub reuse: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    spec: String,
    #[serde(default)]
    company_parameter: Option<String>,
    #[serde(default)]
    contact_operation: Option<String>,
    #[serde(default)]
    paging: Option<Paging>,
    #[serde(default)]
    confirm: BTreeMap<String, Confirm>,
    #[serde(default)]
    defaults: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

/// An API as Automate-E uses it.
#[derive(Debug)]
pub struct ApiProfile {
    /// Its name (the profile's file stem).
    pub name: String,
    /// The document, read as a strict server reads requests.
    pub spec: ApiSpec,
    /// The path parameter the tenant's company fills (`companySlug`).
    pub company_parameter: Option<String>,
    /// The operation that creates a contact a write may need.
    pub contact_operation: Option<String>,
    /// How its lists are paged.
    pub paging: Option<Paging>,
    /// How each create is confirmed, by operation id.
    pub confirm: BTreeMap<String, Confirm>,
    /// Query parameters sent to an operation when the call gives none, by
    /// operation id.
    pub defaults: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl PartialEq for ApiProfile {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// The APIs of a deployment, by name.
pub type Apis = BTreeMap<String, Arc<ApiProfile>>;

impl ApiProfile {
    /// Reads a profile and its document (named relative to the profile).
    pub fn load(path: &Path) -> Result<Self, CharacterError> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = read_capped(path, MAX_CHARACTER_FILE_BYTES)?;
        let file: ProfileFile = toml::from_str(&text).map_err(|e| CharacterError::Malformed {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let spec_path = path.with_file_name(&file.spec);
        let spec_text = read_capped(&spec_path, MAX_SPEC_BYTES)?;
        let spec = ApiSpec::from_yaml(&spec_text)
            .map_err(|e| invalid(&name, format!("{}: {e}", spec_path.display())))?
            .strict_requests();
        let profile = Self {
            name,
            spec,
            company_parameter: file.company_parameter,
            contact_operation: file.contact_operation,
            paging: file.paging,
            confirm: file.confirm,
            defaults: file.defaults,
        };
        profile.validate()?;
        Ok(profile)
    }

    /// The operation with this id, or why there is none.
    pub fn operation(&self, id: &str) -> Result<&Operation, String> {
        self.spec
            .operation(id)
            .ok_or_else(|| format!("the {} API has no operation `{id}`", self.name))
    }

    fn validate(&self) -> Result<(), CharacterError> {
        let bad = |reason: String| invalid(&self.name, reason);
        if let Some(contacts) = &self.contact_operation {
            let op = self.operation(contacts).map_err(bad)?;
            if !self.confirm.contains_key(&op.id) {
                return Err(bad(format!(
                    "contact operation `{contacts}` has no [confirm]"
                )));
            }
        }
        for (id, defaults) in &self.defaults {
            let op = self.operation(id).map_err(bad)?;
            for name in defaults.keys() {
                if !op.params_in(ParamIn::Query).any(|p| &p.name == name) {
                    return Err(bad(format!("[defaults.{id}]: no query parameter `{name}`")));
                }
            }
        }
        for (create, confirm) in &self.confirm {
            let op = self.operation(create).map_err(bad)?;
            if op.method != "POST" {
                return Err(bad(format!("[confirm.{create}]: not a POST operation")));
            }
            let list = self.operation(&confirm.list).map_err(bad)?;
            if list.method != "GET" {
                return Err(bad(format!(
                    "[confirm.{create}]: list `{}` is not a GET operation",
                    list.id
                )));
            }
            for param in list.params_in(ParamIn::Path) {
                if !op.params_in(ParamIn::Path).any(|p| p.name == param.name) {
                    return Err(bad(format!(
                        "[confirm.{create}]: `{}` needs path parameter `{}`, which `{create}` lacks",
                        list.id, param.name
                    )));
                }
            }
            for name in confirm.query.keys() {
                if !list.params_in(ParamIn::Query).any(|p| &p.name == name) {
                    return Err(bad(format!(
                        "[confirm.{create}]: `{}` has no query parameter `{name}`",
                        list.id
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Loads every `<dir>/*.toml` profile; none when the directory is missing.
pub fn load_apis(dir: &Path) -> Result<Apis, CharacterError> {
    let mut apis = Apis::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(apis);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let profile = ApiProfile::load(&path)?;
            apis.insert(profile.name.clone(), Arc::new(profile));
        }
    }
    Ok(apis)
}

fn read_capped(path: &Path, limit: u64) -> Result<String, CharacterError> {
    let io = |source| CharacterError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    if bytes > limit {
        return Err(CharacterError::TooLarge {
            path: path.to_owned(),
            bytes,
            limit,
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

fn invalid(api: &str, reason: String) -> CharacterError {
    CharacterError::InvalidApi {
        api: api.to_owned(),
        reason,
    }
}
