//! An OpenAPI 3 document, read once: its operations by id or by request
//! line, and whether a request conforms — path, query and body checked
//! against the document's own schemas (JSON Schema, with OpenAPI 3.0's
//! `nullable` read as a null type). The product checks what it will send to
//! the Accounting API with it; the test fakes check what they receive.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

/// Why a document could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// Not YAML or JSON.
    #[error("the API document does not parse: {0}")]
    Parse(String),
    /// It parsed, but is not an OpenAPI 3 document this reader understands.
    #[error("the API document is not OpenAPI 3: {0}")]
    Shape(String),
}

/// Where a parameter travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    /// A `{name}` segment of the path.
    Path,
    /// The query string.
    Query,
    /// A header.
    Header,
}

/// One parameter of an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Where it travels.
    pub location: ParamIn,
    /// Whether the operation needs it.
    pub required: bool,
    /// What the document says of it.
    pub description: String,
    /// Its schema (references left as they are in the document).
    pub schema: Value,
}

/// The body of an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    /// `application/json` or `multipart/form-data`.
    pub media_type: String,
    /// Whether the operation needs one.
    pub required: bool,
    /// Its schema (references left as they are in the document).
    pub schema: Value,
}

/// One operation of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Its `operationId`.
    pub id: String,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path template (`/companies/{companySlug}/purchases`).
    pub path: String,
    /// What the document says it does.
    pub summary: String,
    /// Its parameters (the path item's and its own).
    pub params: Vec<Param>,
    /// Its body, JSON preferred over multipart.
    pub body: Option<Body>,
}

impl Operation {
    /// The parameters that travel in `location`.
    pub fn params_in(&self, location: ParamIn) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(move |p| p.location == location)
    }

    /// How well the template fits `path`: `None` when it does not; more
    /// literal segments fit better (`/purchases/drafts` before
    /// `/purchases/{purchaseId}`).
    fn fit(&self, path: &str) -> Option<(usize, BTreeMap<String, String>)> {
        let template: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let actual: Vec<&str> = path.trim_matches('/').split('/').collect();
        if template.len() != actual.len() {
            return None;
        }
        let mut literal = 0;
        let mut params = BTreeMap::new();
        for (t, a) in template.iter().zip(&actual) {
            // A segment is a literal, or a parameter between a literal prefix
            // and suffix (`bot{token}`).
            match t.split_once('{').and_then(|(prefix, rest)| {
                let (name, suffix) = rest.split_once('}')?;
                Some((prefix, name, suffix))
            }) {
                Some((prefix, name, suffix)) => {
                    let value = a.strip_prefix(prefix)?.strip_suffix(suffix)?;
                    if value.is_empty() {
                        return None;
                    }
                    params.insert(name.to_owned(), percent_decode(value)?);
                }
                None if t == a => literal += 1,
                None => return None,
            }
        }
        Some((literal, params))
    }
}

/// What a request breaks, one line per problem (`body.lines[0].vatType:
/// "HIHG" is not one of …`).
pub type Violations = Vec<String>;

/// A request, as the checks see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestParts<'a> {
    /// The path parameters, decoded.
    pub path: BTreeMap<String, String>,
    /// The query string's pairs, decoded, in order.
    pub query: &'a [(String, String)],
    /// The body: a JSON value, or a multipart form's fields as an object
    /// (a file part as a string of its file name).
    pub body: Option<&'a Value>,
}

/// An OpenAPI 3 document.
pub struct ApiSpec {
    /// The document, `nullable` rewritten as JSON Schema.
    doc: Arc<Value>,
    operations: Vec<Operation>,
    /// Compiled schemas, by their JSON text.
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl std::fmt::Debug for ApiSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSpec")
            .field("operations", &self.operations.len())
            .finish_non_exhaustive()
    }
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

impl ApiSpec {
    /// Reads a document written in YAML (or JSON, a subset of it).
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let Loose(doc) = yaml_serde::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        Self::from_value(doc)
    }

    /// Reads a document written in JSON.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        Self::from_value(doc)
    }

    /// Reads a parsed document.
    pub fn from_value(mut doc: Value) -> Result<Self, SpecError> {
        let version = doc["openapi"].as_str().unwrap_or_default();
        if !version.starts_with('3') {
            return Err(SpecError::Shape(format!(
                "`openapi` is `{version}`, not 3.x"
            )));
        }
        as_json_schema(&mut doc);
        let paths = doc["paths"]
            .as_object()
            .ok_or_else(|| SpecError::Shape("no `paths`".to_owned()))?;
        let mut operations = Vec::new();
        for (path, item) in paths {
            let shared = item.get("parameters").cloned().unwrap_or(Value::Null);
            for method in METHODS {
                let Some(op) = item.get(method) else {
                    continue;
                };
                let mut all = params(&doc, &shared)?;
                for own in params(&doc, op.get("parameters").unwrap_or(&Value::Null))? {
                    all.retain(|p| !(p.name == own.name && p.location == own.location));
                    all.push(own);
                }
                operations.push(Operation {
                    id: op["operationId"].as_str().unwrap_or_default().to_owned(),
                    method: method.to_uppercase(),
                    path: path.clone(),
                    summary: op["summary"]
                        .as_str()
                        .or(op["description"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    params: all,
                    body: body(&doc, op.get("requestBody")),
                });
            }
        }
        Ok(Self {
            doc: Arc::new(doc),
            operations,
            compiled: Mutex::default(),
        })
    }

    /// The document as a strict server reads requests (Fiken's answers 400
    /// to an unexpected field): an object schema with properties allows no
    /// others, a `readOnly` property is not accepted, and a property the
    /// schema requires but never declares may hold anything.
    #[must_use]
    pub fn strict_requests(mut self) -> Self {
        let doc = Arc::make_mut(&mut self.doc);
        let mut shared = Vec::new();
        all_of_members(doc, &mut shared);
        if let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") {
            for (name, schema) in schemas.iter_mut() {
                strict(schema, shared.contains(name));
            }
        }
        for op in &mut self.operations {
            if let Some(body) = &mut op.body {
                strict(&mut body.schema, false);
            }
        }
        self.compiled = Mutex::default();
        self
    }

    /// `schema` as a model is given it for a tool's arguments: references
    /// inlined, `readOnly` properties and examples left out.
    pub fn model_schema(&self, schema: &Value) -> Value {
        inline(&self.doc, schema, 0)
    }

    /// The operation with this `operationId`.
    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.operations.iter().find(|op| op.id == id)
    }

    /// The operation a request line names, and its path parameters.
    pub fn route(
        &self,
        method: &str,
        path: &str,
    ) -> Option<(&Operation, BTreeMap<String, String>)> {
        self.operations
            .iter()
            .filter(|op| op.method.eq_ignore_ascii_case(method))
            .filter_map(|op| op.fit(path).map(|(literal, params)| (literal, op, params)))
            .max_by_key(|(literal, _, _)| *literal)
            .map(|(_, op, params)| (op, params))
    }

    /// The schema `reference` (`#/components/schemas/purchaseRequest`)
    /// points to, or `schema` itself.
    pub fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        resolve(&self.doc, schema)
    }

    /// What `value` breaks of `schema` (a schema of this document); each
    /// problem says where, under `at`.
    pub fn check(&self, schema: &Value, value: &Value, at: &str) -> Violations {
        let validator = match self.compile(schema) {
            Ok(validator) => validator,
            Err(e) => return vec![format!("{at}: the document's schema does not compile: {e}")],
        };
        problems(&validator, value, at)
    }

    /// What a request to `op` breaks: missing or wrong parameters (query
    /// values read as the types their schemas name), parameters the
    /// operation does not have, a missing or wrong body.
    pub fn check_request(&self, op: &Operation, request: &RequestParts<'_>) -> Violations {
        let mut problems = Violations::new();
        for param in op.params_in(ParamIn::Path) {
            match request.path.get(&param.name) {
                Some(raw) => problems.extend(self.check_raw(param, &[raw.as_str()])),
                None => problems.push(format!("path.{}: missing", param.name)),
            }
        }
        let declared: Vec<&str> = op
            .params_in(ParamIn::Query)
            .map(|p| p.name.as_str())
            .collect();
        for (name, _) in request.query {
            if !declared.contains(&name.as_str()) {
                problems.push(format!("query.{name}: the operation has no such parameter"));
            }
        }
        for param in op.params_in(ParamIn::Query) {
            let values: Vec<&str> = request
                .query
                .iter()
                .filter(|(name, _)| *name == param.name)
                .map(|(_, value)| value.as_str())
                .collect();
            if values.is_empty() {
                if param.required {
                    problems.push(format!("query.{}: missing", param.name));
                }
                continue;
            }
            problems.extend(self.check_raw(param, &values));
        }
        match (&op.body, request.body) {
            (Some(body), Some(value)) => problems.extend(self.check(&body.schema, value, "body")),
            (Some(body), None) if body.required => problems.push("body: missing".to_owned()),
            (None, Some(_)) => problems.push("body: the operation takes none".to_owned()),
            _ => {}
        }
        problems
    }

    /// Checks a parameter's raw text values, read as its schema's type.
    fn check_raw(&self, param: &Param, raw: &[&str]) -> Violations {
        let schema = self.resolve(&param.schema);
        let at = match param.location {
            ParamIn::Path => format!("path.{}", param.name),
            ParamIn::Query => format!("query.{}", param.name),
            ParamIn::Header => format!("header.{}", param.name),
        };
        let value = if schema_type(schema) == Some("array") {
            let item = self.resolve(&schema["items"]);
            Value::Array(raw.iter().map(|r| typed(item, r)).collect())
        } else if let [one] = raw {
            typed(schema, one)
        } else {
            return vec![format!("{at}: given {} times", raw.len())];
        };
        self.check(&param.schema, &value, &at)
    }

    fn compile(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let key = schema.to_string();
        let mut compiled = self
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(validator) = compiled.get(&key) {
            return Ok(Arc::clone(validator));
        }
        // The schema sits in a copy of the document's components, so its
        // references (`#/components/schemas/…`) resolve.
        let mut root = json!({ "components": self.doc["components"].clone() });
        if let (Some(root), Some(schema)) = (root.as_object_mut(), schema.as_object()) {
            root.extend(schema.clone());
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| e.to_string())?;
        let validator = Arc::new(validator);
        compiled.insert(key, Arc::clone(&validator));
        Ok(validator)
    }
}

/// What `value` breaks of a standalone schema (one with no references),
/// each problem said where, under `at`. Compiled schemas are kept.
pub fn check_schema(schema: &Value, value: &Value, at: &str) -> Violations {
    static COMPILED: std::sync::OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        std::sync::OnceLock::new();
    let key = schema.to_string();
    let validator = {
        let mut compiled = COMPILED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match compiled.get(&key) {
            Some(v) => Arc::clone(v),
            None => match jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(schema)
            {
                Ok(v) => {
                    let v = Arc::new(v);
                    compiled.insert(key, Arc::clone(&v));
                    v
                }
                Err(e) => return vec![format!("{at}: the schema does not compile: {e}")],
            },
        }
    };
    problems(&validator, value, at)
}

fn problems(validator: &jsonschema::Validator, value: &Value, at: &str) -> Violations {
    validator
        .iter_errors(value)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = path.trim_start_matches('/').replace('/', ".");
            let place = if path.is_empty() {
                at.to_owned()
            } else {
                format!("{at}.{path}")
            };
            format!("{place}: {e}")
        })
        .collect()
}

/// The value a raw parameter text stands for under `schema`: a number or a
/// boolean where the schema asks for one and the text is one, else the text.
fn typed(schema: &Value, raw: &str) -> Value {
    match schema_type(schema) {
        Some("integer") => raw.parse::<i64>().map_or_else(|_| json!(raw), Value::from),
        Some("number") => raw.parse::<f64>().map_or_else(|_| json!(raw), Value::from),
        Some("boolean") => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => json!(raw),
        },
        _ => json!(raw),
    }
}

/// A schema's type, when it names one (the first non-null of a list).
fn schema_type(schema: &Value) -> Option<&str> {
    match &schema["type"] {
        Value::String(t) => Some(t),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

/// What a `$ref` points to inside `doc` (one level), or `value` itself.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => doc.pointer(pointer).unwrap_or(value),
        None => value,
    }
}

fn params(doc: &Value, list: &Value) -> Result<Vec<Param>, SpecError> {
    let Some(list) = list.as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|p| {
            let p = resolve(doc, p);
            let location = match p["in"].as_str() {
                Some("path") => ParamIn::Path,
                Some("query") => ParamIn::Query,
                Some("header") => ParamIn::Header,
                other => {
                    return Err(SpecError::Shape(format!(
                        "parameter `{}` in {other:?}",
                        p["name"]
                    )));
                }
            };
            Ok(Param {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                location,
                required: p["required"].as_bool().unwrap_or(location == ParamIn::Path),
                description: p["description"].as_str().unwrap_or_default().to_owned(),
                schema: p.get("schema").cloned().unwrap_or_else(|| json!({})),
            })
        })
        .collect()
}

fn body(doc: &Value, body: Option<&Value>) -> Option<Body> {
    let body = resolve(doc, body?);
    let content = body["content"].as_object()?;
    ["application/json", "multipart/form-data"]
        .into_iter()
        .find_map(|media_type| {
            content.get(media_type).map(|c| Body {
                media_type: media_type.to_owned(),
                required: body["required"].as_bool().unwrap_or(false),
                schema: c.get("schema").cloned().unwrap_or_else(|| json!({})),
            })
        })
}

/// A document value read from YAML as JSON, where an integer past 64 bits
/// (OpenAI's documents use them as bounds) becomes the nearest float.
struct Loose(Value);

impl<'de> serde::Deserialize<'de> for Loose {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor).map(Loose)
    }
}

struct LooseVisitor;

impl<'de> serde::de::Visitor<'de> for LooseVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::from(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::from(u))
    }

    #[expect(clippy::cast_precision_loss, reason = "the nearest float is the point")]
    fn visit_i128<E>(self, i: i128) -> Result<Value, E> {
        Ok(Value::from(i as f64))
    }

    #[expect(clippy::cast_precision_loss, reason = "the nearest float is the point")]
    fn visit_u128<E>(self, u: u128) -> Result<Value, E> {
        Ok(Value::from(u as f64))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::from(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Loose(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some((Loose(key), Loose(value))) = map.next_entry::<Loose, Loose>()? {
            let key = match key {
                Value::String(s) => s,
                other => other.to_string(),
            };
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Rewrites OpenAPI 3.0's schema dialect as JSON Schema, everywhere in the
/// document: `nullable: true` becomes a `null` type (or, beside a reference
/// or a composition, an alternative), and a file part (`format: binary`) a
/// string with no format.
fn as_json_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                as_json_schema(child);
            }
            if map.get("format").and_then(Value::as_str) == Some("binary") {
                map.remove("format");
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                allow_null(map);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(as_json_schema),
        _ => {}
    }
}

fn allow_null(schema: &mut Map<String, Value>) {
    match schema.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            schema.insert("type".to_owned(), json!([t, "null"]));
            if let Some(Value::Array(options)) = schema.get_mut("enum") {
                options.push(Value::Null);
            }
        }
        Some(Value::Array(types)) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
        }
        _ => {
            let inner = std::mem::take(schema);
            schema.insert(
                "anyOf".to_owned(),
                json!([Value::Object(inner), {"type": "null"}]),
            );
        }
    }
}

/// Applies [`ApiSpec::strict_requests`] to one schema and the schemas
/// below it. `open` keeps it open to other properties: a member of an
/// `allOf` shares its object with the other members.
fn strict(schema: &mut Value, open: bool) {
    let Value::Object(map) = schema else {
        return;
    };
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        let read_only: Vec<String> = properties
            .iter()
            .filter(|(_, p)| p.get("readOnly") == Some(&Value::Bool(true)))
            .map(|(name, _)| name.clone())
            .collect();
        properties.retain(|name, _| !read_only.contains(name));
        let declared: Vec<String> = properties.keys().cloned().collect();
        let mut undeclared = Vec::new();
        if let Some(Value::Array(required)) = map.get_mut("required") {
            required.retain(|r| !read_only.iter().any(|ro| r == ro.as_str()));
            undeclared.extend(
                required
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|r| !declared.iter().any(|d| d == r))
                    .map(str::to_owned),
            );
        }
        if let Some(Value::Object(properties)) = map.get_mut("properties") {
            for name in undeclared {
                properties.insert(name, json!({}));
            }
            properties.values_mut().for_each(|p| strict(p, false));
        }
        if !open {
            map.entry("additionalProperties")
                .or_insert(Value::Bool(false));
        }
    }
    if let Some(items) = map.get_mut("items") {
        strict(items, false);
    }
    for (key, members_open) in [("allOf", true), ("anyOf", false), ("oneOf", false)] {
        if let Some(Value::Array(members)) = map.get_mut(key) {
            members.iter_mut().for_each(|m| strict(m, members_open));
        }
    }
}

/// The component schemas an `allOf` refers to: they must stay open.
fn all_of_members(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(members)) = map.get("allOf") {
                out.extend(
                    members
                        .iter()
                        .filter_map(|m| m["$ref"].as_str())
                        .filter_map(|r| r.strip_prefix("#/components/schemas/"))
                        .map(str::to_owned),
                );
            }
            map.values().for_each(|v| all_of_members(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| all_of_members(v, out)),
        _ => {}
    }
}

/// `schema` with its references inlined (at most [`MAX_INLINE_DEPTH`]
/// deep), `readOnly` properties and examples left out.
fn inline(doc: &Value, schema: &Value, depth: usize) -> Value {
    let schema = resolve(doc, schema);
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    if depth > MAX_INLINE_DEPTH {
        return json!({});
    }
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "example" | "examples" | "xml" | "externalDocs" | "readOnly" | "writeOnly" => {}
            "properties" => {
                let properties: Map<String, Value> = value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, p)| resolve(doc, p).get("readOnly") != Some(&Value::Bool(true)))
                    .map(|(name, p)| (name.clone(), inline(doc, p, depth + 1)))
                    .collect();
                out.insert(key.clone(), Value::Object(properties));
            }
            "items" => {
                out.insert(key.clone(), inline(doc, value, depth + 1));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let members = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| inline(doc, m, depth + 1))
                    .collect();
                out.insert(key.clone(), Value::Array(members));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

/// How deep [`ApiSpec::model_schema`] follows references.
const MAX_INLINE_DEPTH: usize = 8;

/// Decodes `%XX` escapes of a path segment; `None` when malformed.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r##"
openapi: 3.0.2
paths:
  /companies/{companySlug}/purchases:
    parameters:
      - $ref: '#/components/parameters/companySlug'
    get:
      operationId: getPurchases
      parameters:
        - name: page
          in: query
          schema: { type: integer, minimum: 0 }
        - name: dateGe
          in: query
          schema: { type: string, format: date }
    post:
      operationId: createPurchase
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: '#/components/schemas/purchaseRequest' }
  /companies/{companySlug}/purchases/drafts:
    get:
      operationId: getPurchaseDrafts
      parameters:
        - $ref: '#/components/parameters/companySlug'
  /companies/{companySlug}/purchases/{purchaseId}:
    get:
      operationId: getPurchase
      parameters:
        - $ref: '#/components/parameters/companySlug'
        - name: purchaseId
          in: path
          required: true
          schema: { type: integer, format: int64 }
components:
  parameters:
    companySlug:
      name: companySlug
      in: path
      required: true
      schema: { type: string }
  schemas:
    purchaseRequest:
      type: object
      required: [date, lines]
      properties:
        date: { type: string, format: date }
        dueDate: { type: string, format: date, nullable: true }
        lines:
          type: array
          items: { $ref: '#/components/schemas/orderLine' }
    orderLine:
      type: object
      required: [vatType]
      properties:
        vatType: { type: string, enum: [HIGH, LOW] }
        netPrice: { type: integer, minimum: 0 }
"##;

    fn spec() -> ApiSpec {
        ApiSpec::from_yaml(DOC).unwrap()
    }

    #[test]
    fn operations_are_found_by_id_and_by_request_line_literal_segments_first() {
        let spec = spec();
        assert_eq!(spec.operation("createPurchase").unwrap().method, "POST");
        let (op, params) = spec
            .route("GET", "/companies/acme-as/purchases/drafts")
            .unwrap();
        assert_eq!(op.id, "getPurchaseDrafts");
        assert_eq!(params["companySlug"], "acme-as");
        let (op, params) = spec
            .route("get", "/companies/acme%20as/purchases/42")
            .unwrap();
        assert_eq!(op.id, "getPurchase");
        assert_eq!(params["companySlug"], "acme as");
        assert!(spec.route("GET", "/companies/acme/sales").is_none());
        assert!(spec.route("DELETE", "/companies/acme/purchases").is_none());
        assert!(spec.route("GET", "/companies//purchases").is_none());
        let telegram = ApiSpec::from_yaml(
            "openapi: 3.0.3\npaths:\n  /bot{token}/sendMessage:\n    post: {operationId: sendMessage}\n",
        )
        .unwrap();
        let (op, params) = telegram.route("POST", "/bot123:abc/sendMessage").unwrap();
        assert_eq!(
            (op.id.as_str(), params["token"].as_str()),
            ("sendMessage", "123:abc")
        );
        assert!(telegram.route("POST", "/123:abc/sendMessage").is_none());
        let shared = spec.operation("getPurchases").unwrap();
        assert_eq!(
            shared.params_in(ParamIn::Path).count(),
            1,
            "path item parameters apply"
        );
    }

    #[test]
    fn a_conforming_request_passes() {
        let spec = spec();
        let op = spec.operation("createPurchase").unwrap();
        let body = json!({"date": "2026-12-01", "dueDate": null, "lines": [{"vatType": "HIGH", "netPrice": 100}]});
        let request = RequestParts {
            path: [("companySlug".to_owned(), "acme".to_owned())].into(),
            query: &[],
            body: Some(&body),
        };
        assert_eq!(spec.check_request(op, &request), Violations::new());
        let op = spec.operation("getPurchases").unwrap();
        let query = [
            ("page".to_owned(), "2".to_owned()),
            ("dateGe".to_owned(), "2026-01-31".to_owned()),
        ];
        let request = RequestParts {
            path: [("companySlug".to_owned(), "acme".to_owned())].into(),
            query: &query,
            body: None,
        };
        assert_eq!(spec.check_request(op, &request), Violations::new());
    }

    #[test]
    fn every_kind_of_violation_is_named_where_it_is() {
        let spec = spec();
        let op = spec.operation("createPurchase").unwrap();
        let body = json!({"date": "1 Dec", "lines": [{"vatType": "HIHG", "netPrice": -1}]});
        let request = RequestParts {
            path: BTreeMap::new(),
            query: &[("page".to_owned(), "1".to_owned())],
            body: Some(&body),
        };
        let problems = spec.check_request(op, &request).join("\n");
        for expected in [
            "path.companySlug: missing",
            "query.page: the operation has no such parameter",
            "body.date:",
            "body.lines.0.vatType:",
            "body.lines.0.netPrice:",
        ] {
            assert!(problems.contains(expected), "{expected} in\n{problems}");
        }
        let missing = RequestParts {
            path: [("companySlug".to_owned(), "acme".to_owned())].into(),
            query: &[],
            body: None,
        };
        assert_eq!(spec.check_request(op, &missing), ["body: missing"]);
        let op = spec.operation("getPurchases").unwrap();
        let query = [("page".to_owned(), "first".to_owned())];
        let request = RequestParts {
            path: [("companySlug".to_owned(), "acme".to_owned())].into(),
            query: &query,
            body: None,
        };
        let problems = spec.check_request(op, &request);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("query.page:"), "{problems:?}");
    }

    #[test]
    fn nullable_becomes_a_null_type() {
        let mut schema = json!({"type": "string", "nullable": true, "enum": ["a"]});
        as_json_schema(&mut schema);
        assert_eq!(
            schema,
            json!({"type": ["string", "null"], "enum": ["a", null]})
        );
        let mut schema = json!({"$ref": "#/x", "nullable": true});
        as_json_schema(&mut schema);
        assert_eq!(
            schema,
            json!({"anyOf": [{"$ref": "#/x"}, {"type": "null"}]})
        );
    }

    #[test]
    fn a_document_that_is_not_openapi_3_is_refused() {
        assert!(matches!(
            ApiSpec::from_yaml("swagger: '2.0'\npaths: {}"),
            Err(SpecError::Shape(_))
        ));
        assert!(matches!(
            ApiSpec::from_yaml("openapi: [unclosed"),
            Err(SpecError::Parse(_))
        ));
    }
}
