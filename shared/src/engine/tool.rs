//! Turns character tools into function schemas for the model, and a model's
//! tool call into the exact requests it makes (a read now, a plan of
//! writes for review) or a checked builtin call — or a refusal the model
//! can read. Every request is checked against the API's document before it
//! is sent or filed.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::character::operation::{UPLOAD_FIELDS, own_path_params};
use crate::character::{
    ApiProfile, BODY_ARGUMENT, Builtin, Character, Effect, NEW_CONTACT_ARGUMENT, RECEIPT_ARGUMENT,
    ToolDef,
};
use crate::engine::text::strip_nul;
use crate::openapi::{Operation, ParamIn, RequestParts};
use crate::request::{FileRef, Fill, FillTarget, ToolRequest, WritePlan, WriteStep};

/// Longest accepted tool-call arguments from the model, in bytes.
pub const MAX_ARGUMENTS_BYTES: usize = 16 * 1024;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    /// The tool name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// The function schemas of all of a character's tools, builtins included.
pub fn function_specs(character: &Character) -> Vec<FunctionSpec> {
    character
        .tools
        .iter()
        .map(|t| FunctionSpec {
            name: t.name.clone(),
            description: match t.effect {
                Effect::Read => t.description.clone(),
                Effect::Write => format!(
                    "{} (Changes the books: calling it files a proposal for human review; \
                     it is NOT carried out until approved.)",
                    t.description
                ),
            },
            parameters: t.parameters.clone(),
        })
        .collect()
}

/// A stored receipt the owner sent, which the model may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// What the model calls it (`receipt-<first 12 hex digits of its digest>`).
    pub id: String,
    /// The file.
    pub file: FileRef,
}

impl Receipt {
    /// The receipt of a stored file.
    pub fn of(file: FileRef) -> Self {
        Self {
            id: format!("receipt-{}", &file.sha256[..file.sha256.len().min(12)]),
            file,
        }
    }
}

/// What a call may use besides its arguments.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallSite<'a> {
    /// The tenant's company in the API (`companySlug`), when connected.
    pub company: Option<&'a str>,
    /// The receipts the owner sent in the conversation.
    pub receipts: &'a [Receipt],
}

/// What to do with a tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannedCall {
    /// A read: call it now.
    Read(ToolRequest),
    /// Writes: never made during the turn; filed for review.
    Write(WritePlan),
    /// A builtin the worker runs now, with arguments already checked against
    /// [`Builtin::parameters`] (null arguments dropped).
    Builtin(Builtin, Map<String, Value>),
}

/// Why a tool call was refused; the message is fed back to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolCallError {
    /// The model named a tool the character does not have.
    #[error("there is no tool named `{0}`")]
    UnknownTool(String),
    /// The arguments are too long.
    #[error("the arguments are longer than {MAX_ARGUMENTS_BYTES} bytes")]
    TooLarge,
    /// The arguments are not a JSON object.
    #[error("the arguments must be a JSON object: {0}")]
    NotAnObject(String),
    /// The arguments break the tool's schema, or the request they make
    /// breaks the API's document: each problem, where it is.
    #[error("the arguments are not valid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The call cannot be made as asked.
    #[error("{0}")]
    Refused(String),
}

/// Most problems told to the model at once.
const MAX_PROBLEMS: usize = 8;

/// Whether the model call that asks for tool `name` is recorded before the
/// tool runs: a write files a proposal, and a builtin works on the tenant's
/// own records (a fact stored; a usage report, which counts the call that
/// asked for it). A read of the Accounting API, or a name the character
/// lacks (refused), touches none of them: its call is recorded with the
/// turn's next write.
pub fn records_call_first(character: &Character, name: &str) -> bool {
    character
        .tool(name)
        .is_some_and(|tool| tool.builtin.is_some() || tool.effect == Effect::Write)
}

/// Validates the model's arguments for `name` and builds the exact
/// requests, or the builtin call.
pub fn plan_call(
    character: &Character,
    name: &str,
    arguments: &str,
    site: &CallSite<'_>,
) -> Result<PlannedCall, ToolCallError> {
    let tool = character
        .tool(name)
        .ok_or_else(|| ToolCallError::UnknownTool(name.to_owned()))?;
    if arguments.len() > MAX_ARGUMENTS_BYTES {
        return Err(ToolCallError::TooLarge);
    }
    let mut args = parse_arguments(arguments)?;
    // A model sends `null` for an optional argument it leaves out.
    args.retain(|_, v| !v.is_null());
    let args = Value::Object(args);
    invalid_if(crate::openapi::check_schema(
        &tool.parameters,
        &args,
        "arguments",
    ))?;
    let Value::Object(args) = args else {
        unreachable!("checked to be an object above")
    };
    if let Some(builtin) = tool.builtin {
        return Ok(PlannedCall::Builtin(builtin, args));
    }
    let (api, op) = operation_of(character, tool)?;
    let planner = Planner { api, site };
    match tool.effect {
        Effect::Read => Ok(PlannedCall::Read(planner.request(tool, op, &args, &[])?)),
        Effect::Write => planner.write_plan(tool, op, args).map(PlannedCall::Write),
    }
}

fn operation_of<'a>(
    character: &'a Character,
    tool: &ToolDef,
) -> Result<(&'a ApiProfile, &'a Operation), ToolCallError> {
    let unknown = || ToolCallError::UnknownTool(tool.name.clone());
    let api = character.api().ok_or_else(unknown)?;
    let op = api
        .operation(tool.operation.as_deref().unwrap_or_default())
        .map_err(|_| unknown())?;
    Ok((api, op))
}

fn invalid_if(problems: Vec<String>) -> Result<(), ToolCallError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(ToolCallError::Invalid(
        problems.into_iter().take(MAX_PROBLEMS).collect(),
    ))
}

/// Builds requests of one API for one tenant.
struct Planner<'a> {
    api: &'a ApiProfile,
    site: &'a CallSite<'a>,
}

impl Planner<'_> {
    /// The request `args` make of `op`, checked against the document.
    /// Path parameters in `later` are left as `{name}` for an id an earlier
    /// step creates (checked with a stand-in id).
    fn request(
        &self,
        tool: &ToolDef,
        op: &Operation,
        args: &Map<String, Value>,
        later: &[&str],
    ) -> Result<ToolRequest, ToolCallError> {
        let mut path_values = BTreeMap::new();
        for param in op.params_in(ParamIn::Path) {
            let value = if self.api.company_parameter.as_deref() == Some(param.name.as_str()) {
                self.site.company.map(str::to_owned).ok_or_else(|| {
                    ToolCallError::Refused(
                        "the company's accounting is not connected yet (no company is set); tell the owner"
                            .to_owned(),
                    )
                })?
            } else if later.contains(&param.name.as_str()) {
                STAND_IN_ID.to_owned()
            } else {
                args.get(&param.name).map(scalar_text).unwrap_or_default()
            };
            path_values.insert(param.name.clone(), value);
        }
        let path = op
            .path
            .split('/')
            .map(
                |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) if later.contains(&name) => segment.to_owned(),
                    Some(name) => encode_segment(path_values.get(name).map_or("", String::as_str)),
                    None => segment.to_owned(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        // serde_json's map is ordered by key, so the query order is stable.
        let mut query = Vec::new();
        for param in op.params_in(ParamIn::Query) {
            match args.get(&param.name) {
                Some(Value::Array(items)) => {
                    query.extend(items.iter().map(|v| (param.name.clone(), scalar_text(v))));
                }
                Some(value) => query.push((param.name.clone(), scalar_text(value))),
                None => {
                    if let Some(value) = self
                        .api
                        .defaults
                        .get(&op.id)
                        .and_then(|d| d.get(&param.name))
                    {
                        query.push((param.name.clone(), scalar_text(value)));
                    }
                }
            }
        }
        let (body, file) = match &op.body {
            Some(body) if body.media_type == "multipart/form-data" => {
                let file = self.receipt(args)?;
                (Some(json!({ "filename": file.filename })), Some(file))
            }
            Some(_) => (args.get(BODY_ARGUMENT).cloned(), None),
            None => (None, None),
        };
        // A file part is checked as its name, as the fakes see it.
        let checked_body = match (&body, &file) {
            (Some(Value::Object(fields)), Some(file)) => {
                let mut fields = fields.clone();
                fields.insert(UPLOAD_FIELDS[1].to_owned(), json!(file.filename));
                Some(Value::Object(fields))
            }
            _ => body.clone(),
        };
        invalid_if(self.api.spec.check_request(
            op,
            &RequestParts {
                path: path_values,
                query: &query,
                body: checked_body.as_ref(),
            },
        ))?;
        Ok(ToolRequest {
            tool: tool.name.clone(),
            operation: op.id.clone(),
            method: op.method.clone(),
            path,
            query,
            body,
            file,
        })
    }

    /// The receipt the arguments name.
    fn receipt(&self, args: &Map<String, Value>) -> Result<FileRef, ToolCallError> {
        let id = args
            .get(RECEIPT_ARGUMENT)
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.site
            .receipts
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.file.clone())
            .ok_or_else(|| {
                let known: Vec<&str> = self.site.receipts.iter().map(|r| r.id.as_str()).collect();
                ToolCallError::Refused(if known.is_empty() {
                    format!("there is no receipt `{id}`: the owner has sent none")
                } else {
                    format!("there is no receipt `{id}`; the owner's receipts are {known:?}")
                })
            })
    }

    /// The writes of a call: a new contact first, when the model gave one;
    /// the write; its receipt's upload, when it names one.
    fn write_plan(
        &self,
        tool: &ToolDef,
        op: &Operation,
        mut args: Map<String, Value>,
    ) -> Result<WritePlan, ToolCallError> {
        let arguments = Value::Object(args.clone());
        let mut steps = Vec::new();
        let mut fill = Vec::new();
        if let (Some(field), Some(contact)) = (&tool.contact_field, args.get(NEW_CONTACT_ARGUMENT))
        {
            let pointer = format!("/{BODY_ARGUMENT}{field}");
            if arguments.pointer(&pointer).is_some() {
                return Err(ToolCallError::Refused(format!(
                    "give either `{BODY_ARGUMENT}{field}` or `{NEW_CONTACT_ARGUMENT}`, not both"
                )));
            }
            let contacts = self
                .api
                .contact_operation
                .as_deref()
                .and_then(|id| self.api.spec.operation(id))
                .ok_or_else(|| ToolCallError::UnknownTool(tool.name.clone()))?;
            let mut contact_args = Map::new();
            contact_args.insert(BODY_ARGUMENT.to_owned(), contact.clone());
            steps.push(WriteStep {
                request: self.request(tool, contacts, &contact_args, &[])?,
                fill: Vec::new(),
            });
            // The write is checked with a stand-in for the contact's id.
            set_pointer(&mut args, &pointer, json!(STAND_IN_NUMBER));
            fill.push(Fill {
                from_step: 0,
                into: FillTarget::BodyField(field.clone()),
            });
        }
        let mut request = self.request(tool, op, &args, &[])?;
        if !fill.is_empty()
            && let Some(body) = &mut request.body
        {
            remove_pointer(body, tool.contact_field.as_deref().unwrap_or_default());
        }
        steps.push(WriteStep { request, fill });
        if let (Some(upload), Some(_)) = (&tool.receipt, args.get(RECEIPT_ARGUMENT)) {
            let upload = self
                .api
                .spec
                .operation(upload)
                .ok_or_else(|| ToolCallError::UnknownTool(tool.name.clone()))?;
            let ids: Vec<&str> = own_path_params(self.api, upload).collect();
            steps.push(WriteStep {
                request: self.request(tool, upload, &args, &ids)?,
                fill: ids
                    .iter()
                    .map(|id| Fill {
                        from_step: steps.len() - 1,
                        into: FillTarget::PathParam((*id).to_owned()),
                    })
                    .collect(),
            });
        }
        Ok(WritePlan {
            tool: tool.name.clone(),
            api: self.api.name.clone(),
            arguments,
            steps,
        })
    }
}

/// Stands in for an id a step creates while a later step is checked.
const STAND_IN_ID: &str = "1";
const STAND_IN_NUMBER: i64 = 1;

fn parse_arguments(arguments: &str) -> Result<Map<String, Value>, ToolCallError> {
    // Models send "" for a call without arguments.
    if arguments.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(mut map)) => {
            // A `\u0000` in a string would reach Postgres, which refuses it.
            map.values_mut().for_each(strip_nul);
            Ok(map)
        }
        Ok(other) => Err(ToolCallError::NotAnObject(format!(
            "got {}",
            type_name(&other)
        ))),
        Err(e) => Err(ToolCallError::NotAnObject(e.to_string())),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sets the value a pointer (into an object) names, creating objects on
/// the way.
fn set_pointer(args: &mut Map<String, Value>, pointer: &str, value: Value) {
    let mut parts = pointer.trim_start_matches('/').split('/').peekable();
    let mut at = args;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            at.insert(part.to_owned(), value);
            return;
        }
        let next = at
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = next else {
            return;
        };
        at = next;
    }
}

/// Removes the field a pointer names.
fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.remove(last);
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes one path segment, so an argument can never add segments
/// (`../`) or a query to the path.
pub fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => out.push(byte as char),
            // A lone "." or ".." must not survive as a dot segment.
            b'.' if !raw.trim_matches('.').is_empty() => out.push('.'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::character::test_apis;

    fn character() -> Character {
        Character::parse_with(
            r#"
            name = "book-e"
            display_name = "Book-E"
            language = "en"
            persona = "p"
            api = "fiken"

            [[tools]]
            name = "list_purchases"
            description = "Purchases."
            operation = "getPurchases"

            [[tools]]
            name = "get_account"
            description = "An account."
            operation = "getAccount"

            [[tools]]
            name = "register_purchase"
            description = "Register a purchase."
            operation = "createPurchase"
            receipt = "addAttachmentToPurchase"
            contact_field = "/supplierId"
            pattern_key = "merchant"
            amount_fields = ["/body/lines/*/netPrice", "/body/lines/*/vat"]

            [[tools]]
            name = "attach_receipt"
            description = "Attach a receipt."
            operation = "addAttachmentToPurchase"

            [[tools]]
            name = "remember_fact"
            description = "Remember a fact."
            builtin = "remember_fact"
            "#,
            Path::new("t.toml"),
            test_apis(),
        )
        .unwrap()
    }

    fn receipt() -> Receipt {
        Receipt::of(FileRef {
            sha256: "ab".repeat(32),
            filename: "kvittering.jpg".into(),
            content_type: "image/jpeg".into(),
            size_bytes: 48_213,
        })
    }

    fn plan(name: &str, args: &str) -> Result<PlannedCall, ToolCallError> {
        let receipts = [receipt()];
        let site = CallSite {
            company: Some("acme-as"),
            receipts: &receipts,
        };
        plan_call(&character(), name, args, &site)
    }

    fn purchase() -> Value {
        json!({
            "date": "2026-11-20", "kind": "cash_purchase", "paid": true, "currency": "NOK",
            "paymentAccount": "1920:10001",
            "lines": [{"description": "Creative Cloud", "netPrice": 15920, "vat": 3980,
                       "account": "6810", "vatType": "HIGH"}]
        })
    }

    #[test]
    fn a_read_fills_the_tenants_company_and_the_query() {
        let planned = plan("list_purchases", r#"{"dateGe":"2026-01-01","paid":true}"#).unwrap();
        let PlannedCall::Read(req) = planned else {
            panic!("a read: {planned:?}")
        };
        assert_eq!(req.operation, "getPurchases");
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/companies/acme-as/purchases");
        assert_eq!(
            req.query,
            [
                ("dateGe".into(), "2026-01-01".into()),
                ("paid".into(), "true".into())
            ]
        );
        assert_eq!(req.body, None);
        let no_company = plan_call(&character(), "list_purchases", "{}", &CallSite::default());
        assert!(
            matches!(&no_company, Err(ToolCallError::Refused(why)) if why.contains("not connected")),
            "{no_company:?}"
        );
    }

    #[test]
    fn path_arguments_cannot_escape_their_segment() {
        for evil in ["../admin", "..", "a/b", "x?y=1", "%2e%2e"] {
            let args = json!({ "accountCode": evil }).to_string();
            let PlannedCall::Read(req) = plan("get_account", &args).unwrap() else {
                panic!()
            };
            let segment = req.path.split('/').nth(4).unwrap();
            assert!(
                !segment.contains('/') && !segment.contains('?'),
                "{evil} -> {}",
                req.path
            );
            assert_ne!(segment, "..");
            assert_ne!(segment, ".");
            assert_eq!(req.path.split('/').count(), 5, "{evil} -> {}", req.path);
        }
    }

    #[test]
    fn a_purchase_with_a_receipt_is_the_purchase_then_its_upload() {
        let args = json!({"merchant": "Adobe", "body": purchase(), "receipt": receipt().id});
        let PlannedCall::Write(written) = plan("register_purchase", &args.to_string()).unwrap()
        else {
            panic!("a write")
        };
        assert_eq!(written.tool, "register_purchase");
        assert_eq!(written.api, "fiken");
        assert_eq!(written.arguments, args);
        assert_eq!(written.steps.len(), 2);
        let create = &written.steps[0];
        assert_eq!(create.request.operation, "createPurchase");
        assert_eq!(create.request.path, "/companies/acme-as/purchases");
        assert_eq!(create.request.body, Some(purchase()));
        assert!(create.fill.is_empty());
        let upload = &written.steps[1];
        assert_eq!(upload.request.operation, "addAttachmentToPurchase");
        assert_eq!(
            upload.request.path,
            "/companies/acme-as/purchases/{purchaseId}/attachments"
        );
        assert_eq!(
            upload.request.query,
            [
                ("attachToPayment".into(), "true".into()),
                ("attachToSale".into(), "true".into())
            ]
        );
        assert_eq!(
            upload.request.body,
            Some(json!({"filename": "kvittering.jpg"}))
        );
        assert_eq!(upload.request.file, Some(receipt().file));
        assert_eq!(
            upload.fill,
            [Fill {
                from_step: 0,
                into: FillTarget::PathParam("purchaseId".into())
            }]
        );
    }

    #[test]
    fn attaching_a_receipt_to_a_purchase_uploads_the_named_file() {
        let args = json!({"purchaseId": 3458156, "receipt": receipt().id});
        let PlannedCall::Write(written) = plan("attach_receipt", &args.to_string()).unwrap() else {
            panic!("a write")
        };
        assert_eq!(written.steps.len(), 1);
        let upload = &written.steps[0].request;
        assert_eq!(
            upload.path,
            "/companies/acme-as/purchases/3458156/attachments"
        );
        assert_eq!(upload.body, Some(json!({"filename": "kvittering.jpg"})));
        assert_eq!(upload.file, Some(receipt().file));
        // A name Fiken refuses never reaches it: the upload needs a receipt.
        assert!(matches!(
            plan("attach_receipt", r#"{"purchaseId": 3458156}"#),
            Err(ToolCallError::Invalid(problems)) if problems.join(" ").contains("receipt")
        ));
    }

    #[test]
    fn a_new_supplier_is_found_or_created_first_and_fills_the_purchase() {
        let mut body = purchase();
        body["kind"] = json!("supplier");
        body["paid"] = json!(false);
        let args = json!({"merchant": "Kontorland AS", "body": body,
                          "newContact": {"name": "Kontorland AS", "supplier": true}});
        let PlannedCall::Write(written) = plan("register_purchase", &args.to_string()).unwrap()
        else {
            panic!("a write")
        };
        assert_eq!(written.steps.len(), 2);
        assert_eq!(written.steps[0].request.operation, "createContact");
        assert_eq!(
            written.steps[0].request.body,
            Some(json!({"name": "Kontorland AS", "supplier": true}))
        );
        assert_eq!(written.steps[1].request.body, Some(body));
        assert_eq!(
            written.steps[1].fill,
            [Fill {
                from_step: 0,
                into: FillTarget::BodyField("/supplierId".into())
            }]
        );
        let mut both = args.clone();
        both["body"]["supplierId"] = json!(42);
        assert!(matches!(
            plan("register_purchase", &both.to_string()),
            Err(ToolCallError::Refused(why)) if why.contains("not both")
        ));
    }

    #[test]
    fn refusals_say_what_the_api_document_wants() {
        let invalid = |name: &str, args: Value| match plan(name, &args.to_string()) {
            Err(ToolCallError::Invalid(problems)) => problems.join("; "),
            other => panic!("{name} {args}: {other:?}"),
        };
        let mut no_vat_type = purchase();
        no_vat_type["lines"][0]
            .as_object_mut()
            .unwrap()
            .remove("vatType");
        let why = invalid(
            "register_purchase",
            json!({"merchant": "A", "body": no_vat_type}),
        );
        assert!(why.contains("vatType"), "{why}");
        let mut bad_currency = purchase();
        bad_currency["currency"] = json!("kroner");
        let why = invalid(
            "register_purchase",
            json!({"merchant": "A", "body": bad_currency}),
        );
        assert!(why.contains("currency"), "{why}");
        let mut read_only = purchase();
        read_only["lines"][0]["lineId"] = json!(7);
        let why = invalid(
            "register_purchase",
            json!({"merchant": "A", "body": read_only}),
        );
        assert!(why.contains("lineId"), "{why}");
        let why = invalid("list_purchases", json!({"dateGe": "yesterday"}));
        assert!(why.contains("dateGe"), "{why}");
        let why = invalid("list_purchases", json!({"sql": "drop"}));
        assert!(why.contains("sql"), "{why}");
        let why = invalid("register_purchase", json!({"body": purchase()}));
        assert!(why.contains("merchant"), "{why}");

        let unknown_receipt =
            json!({"merchant": "A", "body": purchase(), "receipt": "receipt-000000000000"});
        assert!(matches!(
            plan("register_purchase", &unknown_receipt.to_string()),
            Err(ToolCallError::Refused(why)) if why.contains("receipt-abababababab")
        ));
        assert_eq!(
            plan("nope", "{}"),
            Err(ToolCallError::UnknownTool("nope".into()))
        );
        assert_eq!(
            plan("list_purchases", "[1]"),
            Err(ToolCallError::NotAnObject("got an array".into()))
        );
        assert!(matches!(
            plan("list_purchases", "{not json"),
            Err(ToolCallError::NotAnObject(_))
        ));
        let huge = format!(r#"{{"dateGe":"{}"}}"#, "a".repeat(MAX_ARGUMENTS_BYTES));
        assert_eq!(plan("list_purchases", &huge), Err(ToolCallError::TooLarge));
        // Models send "" for no arguments, and null for an argument left out.
        assert!(plan("list_purchases", "").is_ok());
        assert!(plan("list_purchases", r#"{"dateGe":null}"#).is_ok());
    }

    #[test]
    fn a_negative_amount_is_refused_so_it_cannot_offset_the_rest() {
        let mut body = purchase();
        body["lines"][0]["netPrice"] = json!(5_000_000);
        body["lines"][0]["vat"] = json!(-4_999_000);
        let args = json!({"merchant": "Adobe", "body": body});
        assert!(matches!(
            plan("register_purchase", &args.to_string()),
            Err(ToolCallError::Invalid(why)) if why.join(" ").contains("arguments.body.lines.0.vat")
        ));
        // The model is told so in the tool's schema.
        let specs = function_specs(&character());
        let write = specs
            .iter()
            .find(|s| s.name == "register_purchase")
            .unwrap();
        assert_eq!(
            write.parameters["properties"]["body"]["properties"]["lines"]["items"]["properties"]["vat"]
                ["minimum"],
            0
        );
    }

    #[test]
    fn write_tools_tell_the_model_they_need_review() {
        let specs = function_specs(&character());
        assert_eq!(specs[0].description, "Purchases.");
        let write = specs
            .iter()
            .find(|s| s.name == "register_purchase")
            .unwrap();
        assert!(write.description.contains("NOT carried out until approved"));
    }

    #[test]
    fn builtin_call_is_planned_as_builtin_with_checked_arguments() {
        let planned = plan("remember_fact", r#"{"fact":"Owns a bakery in Bergen."}"#).unwrap();
        let mut expected = Map::new();
        expected.insert("fact".into(), json!("Owns a bakery in Bergen."));
        assert_eq!(
            planned,
            PlannedCall::Builtin(Builtin::RememberFact, expected)
        );
        for (args, field) in [
            ("{}", "fact"),
            (r#"{"fact":null}"#, "fact"),
            (r#"{"fact":42}"#, "fact"),
            (r#"{"fact":"x","path":"/purchases"}"#, "path"),
        ] {
            match plan("remember_fact", args) {
                Err(ToolCallError::Invalid(problems)) => {
                    assert!(problems.join(" ").contains(field), "{args}: {problems:?}");
                }
                other => panic!("{args}: {other:?}"),
            }
        }
    }

    #[test]
    fn calls_for_writes_and_builtins_are_recorded_first() {
        let c = character();
        assert!(records_call_first(&c, "register_purchase"));
        assert!(records_call_first(&c, "remember_fact"));
        assert!(!records_call_first(&c, "list_purchases"));
        assert!(!records_call_first(&c, "no_such_tool"));
    }

    #[test]
    fn builtins_are_offered_with_their_runtime_parameters() {
        let specs = function_specs(&character());
        let spec = specs.iter().find(|s| s.name == "remember_fact").unwrap();
        assert_eq!(spec.description, "Remember a fact.");
        assert_eq!(spec.parameters, Builtin::RememberFact.parameters());
        assert_eq!(spec.parameters["required"], json!(["fact"]));
    }
}
