//! An operation tool as the model sees it: its arguments derived from the
//! API document, and the rules its options must keep.

use serde_json::{Map, Value, json};

use super::{ApiProfile, BODY_ARGUMENT, Effect, NEW_CONTACT_ARGUMENT, RECEIPT_ARGUMENT, ToolDef};
use crate::openapi::{Operation, ParamIn};

/// The names a multipart upload's form holds, filled by the worker from
/// the stored file.
pub const UPLOAD_FIELDS: [&str; 2] = ["filename", "file"];

/// The tool's effect and the JSON Schema of its arguments, or why the
/// tool cannot call its operation.
pub fn derive(api: &ApiProfile, tool: &ToolDef) -> Result<(Effect, Value), String> {
    let id = tool.operation.as_deref().unwrap_or_default();
    let op = api.operation(id)?;
    let effect = if op.method == "GET" {
        Effect::Read
    } else {
        Effect::Write
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    for param in &op.params {
        if param.location == ParamIn::Header
            || api.company_parameter.as_deref() == Some(param.name.as_str())
            || is_paging(api, op, &param.name)
        {
            continue;
        }
        let mut schema = api.spec.model_schema(&param.schema);
        describe(&mut schema, &param.description);
        properties.insert(param.name.clone(), schema);
        if param.required {
            required.push(param.name.clone());
        }
    }
    if let Some(body) = &op.body {
        if body.media_type == "multipart/form-data" {
            check_upload(api, op)?;
            properties.insert(
                RECEIPT_ARGUMENT.to_owned(),
                receipt_schema("The receipt to upload"),
            );
            required.push(RECEIPT_ARGUMENT.to_owned());
        } else {
            properties.insert(
                BODY_ARGUMENT.to_owned(),
                api.spec.model_schema(&body.schema),
            );
            if body.required {
                required.push(BODY_ARGUMENT.to_owned());
            }
        }
    }
    check_options(api, tool, op, effect)?;
    if let Some(upload) = &tool.receipt {
        properties.insert(
            RECEIPT_ARGUMENT.to_owned(),
            receipt_schema(&format!(
                "A receipt the owner sent, attached with `{upload}` after this write"
            )),
        );
    }
    if let Some(field) = &tool.contact_field {
        let contacts = api.contact_operation.as_deref().unwrap_or_default();
        let contact = api
            .operation(contacts)?
            .body
            .as_ref()
            .ok_or_else(|| format!("`{contacts}` takes no body"))?;
        let mut schema = api.spec.model_schema(&contact.schema);
        describe(
            &mut schema,
            &format!(
                "Instead of `{field}` in the body: a contact not in the books yet, found by name or created first."
            ),
        );
        properties.insert(NEW_CONTACT_ARGUMENT.to_owned(), schema);
    }
    if let Some(own) = tool.own_pattern_argument() {
        properties.insert(
            own.to_owned(),
            json!({"type": "string", "description": "Who this is with, as on the document (used to learn how it is booked; not sent to the API)."}),
        );
        required.push(own.to_owned());
    }
    let mut parameters = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    check_pointers(tool, &parameters)?;
    // The model is told amounts are never negative.
    for field in &tool.amount_fields {
        if let Some(Value::Object(schema)) = schema_at(&mut parameters, field) {
            schema.insert("minimum".to_owned(), json!(0));
        }
    }
    Ok((effect, parameters))
}

/// Whether `name` is a paging parameter the worker sets on a list.
pub fn is_paging(api: &ApiProfile, op: &Operation, name: &str) -> bool {
    op.method == "GET"
        && api
            .paging
            .as_ref()
            .is_some_and(|p| p.page == name || p.size == name)
}

fn check_options(
    api: &ApiProfile,
    tool: &ToolDef,
    op: &Operation,
    effect: Effect,
) -> Result<(), String> {
    let write_only = [
        ("receipt", tool.receipt.is_some()),
        ("contact_field", tool.contact_field.is_some()),
        ("pattern_key", tool.pattern_key.is_some()),
        ("pattern_fields", !tool.pattern_fields.is_empty()),
        ("amount_fields", !tool.amount_fields.is_empty()),
    ];
    match effect {
        Effect::Read => {
            if let Some((option, _)) = write_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "`{option}` is for write tools; `{}` is a GET",
                    op.id
                ));
            }
        }
        Effect::Write => {
            if tool.only_without.is_some() {
                return Err("`only_without` is for read tools".to_owned());
            }
            if !api.confirm.contains_key(&op.id) {
                return Err(format!(
                    "`{}` has no [confirm.{}] in the API profile: a write whose answer is lost could not be confirmed",
                    op.id, op.id
                ));
            }
        }
    }
    if let Some(upload) = &tool.receipt {
        let target = api.operation(upload)?;
        check_upload(api, target)?;
        if !api.confirm.contains_key(upload) {
            return Err(format!(
                "`{upload}` has no [confirm.{upload}] in the API profile"
            ));
        }
        let ids: Vec<_> = own_path_params(api, target).collect();
        if ids.len() != 1 {
            return Err(format!(
                "`{upload}` must take exactly one path parameter besides the company (the id this write creates)"
            ));
        }
    }
    if tool.contact_field.is_some() && api.contact_operation.is_none() {
        return Err("`contact_field` needs `contact_operation` in the API profile".to_owned());
    }
    Ok(())
}

/// The path parameters of `op` besides the company's.
pub fn own_path_params<'a>(
    api: &'a ApiProfile,
    op: &'a Operation,
) -> impl Iterator<Item = &'a str> {
    op.params_in(ParamIn::Path)
        .map(|p| p.name.as_str())
        .filter(move |name| api.company_parameter.as_deref() != Some(name))
}

/// An upload the worker can fill: a multipart form of a file and its name.
fn check_upload(api: &ApiProfile, op: &Operation) -> Result<(), String> {
    let body = op
        .body
        .as_ref()
        .filter(|b| b.media_type == "multipart/form-data")
        .ok_or_else(|| format!("`{}` does not upload a file", op.id))?;
    let schema = api.spec.resolve(&body.schema);
    let fields: Vec<&String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().collect())
        .unwrap_or_default();
    if fields.iter().any(|f| !UPLOAD_FIELDS.contains(&f.as_str())) {
        return Err(format!(
            "`{}` takes form fields besides {UPLOAD_FIELDS:?}: not supported",
            op.id
        ));
    }
    Ok(())
}

/// Every pointer of the pattern and amount options names an argument.
fn check_pointers(tool: &ToolDef, parameters: &Value) -> Result<(), String> {
    let pointers = tool
        .pattern_key
        .iter()
        .filter(|k| k.starts_with('/'))
        .chain(&tool.pattern_fields)
        .chain(&tool.amount_fields);
    for pointer in pointers {
        if !schema_has(parameters, pointer) {
            return Err(format!("`{pointer}` is not an argument of the tool"));
        }
    }
    if let Some(field) = &tool.contact_field {
        let in_body = format!("/{BODY_ARGUMENT}{field}");
        if !schema_has(parameters, &in_body) {
            return Err(format!(
                "contact_field `{field}` is not a field of the body"
            ));
        }
    }
    Ok(())
}

/// Whether the arguments schema has the property a pointer names (`*`
/// steps into an array's items).
fn schema_has(schema: &Value, pointer: &str) -> bool {
    let mut at = schema;
    for part in pointer.trim_start_matches('/').split('/') {
        at = if part == "*" || part.parse::<usize>().is_ok() {
            match at.get("items") {
                Some(items) => items,
                None => return false,
            }
        } else {
            match at.get("properties").and_then(|p| p.get(part)) {
                Some(property) => property,
                None => return false,
            }
        };
    }
    true
}

/// The schema of the argument a pointer names, to change it.
fn schema_at<'a>(schema: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    let mut at = schema;
    for part in pointer.trim_start_matches('/').split('/') {
        at = if part == "*" || part.parse::<usize>().is_ok() {
            at.get_mut("items")?
        } else {
            at.get_mut("properties")?.get_mut(part)?
        };
    }
    Some(at)
}

fn receipt_schema(what: &str) -> Value {
    json!({
        "type": "string",
        "description": format!("{what}: its id, as listed under the owner's message (`receipt-…`)."),
    })
}

fn describe(schema: &mut Value, description: &str) {
    if let Value::Object(map) = schema
        && !description.is_empty()
        && !map.contains_key("description")
    {
        map.insert("description".to_owned(), json!(description));
    }
}
