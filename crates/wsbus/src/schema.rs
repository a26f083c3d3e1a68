//! JSON Schema validation of message payloads (SPEC §5, "validation of
//! messages in both directions against a data model").
//!
//! A [`Schema`] is compiled once, at start, from a file or an in-memory
//! value, and then checks payloads: [`Schema::validate`] for an already
//! parsed [`Value`] (the `data` of a Bayeux message), [`Schema::validate_text`]
//! for the text of a raw socket message. A failure is a [`Violation`]: the
//! JSON pointer of the offending part of the payload (RFC 6901) and a short
//! reason, displayed as `<pointer>: <reason>`, which is what goes on the wire
//! as the Bayeux error `400::<pointer>: <reason>`.
//!
//! # Choices
//!
//! * **Drafts.** The draft is chosen by the schema's `$schema`: 2020-12 and
//!   draft-07 are the supported ones (draft-04, -06 and 2019-09 are also
//!   recognised by the engine); a schema without `$schema` is 2020-12.
//! * **No fetching.** Schemas are compiled offline: a `$ref` to anything not
//!   inside the schema document itself (a remote URL, another file) fails at
//!   compile time with [`SchemaError::Invalid`]. Local references
//!   (`#/$defs/...`, `#/definitions/...`) work. A server does not make
//!   network requests, nor read files, on behalf of a schema.
//! * **`format` is an annotation.** `format` keywords (`email`, `date-time`,
//!   ...) are not asserted, in every draft. This is what 2020-12 specifies by
//!   default (§7.2.1 of its validation vocabulary) and it keeps validation
//!   cost independent of format checkers; a schema that needs a shape checked
//!   says so with `pattern`, `maxLength` and the like.
//! * **Linear-time patterns.** `pattern` and `patternProperties` are compiled
//!   with the `regex` crate, whose matching time is linear in the input, not
//!   with a backtracking engine: a hostile payload cannot make a pattern take
//!   exponential time. Patterns that need look-around or back-references fail
//!   at compile time.
//! * **No payload in errors.** A [`Violation`]'s reason names the value as
//!   `value` instead of quoting it (the engine's masked messages), so a
//!   rejection can be logged with its pointer without logging the payload
//!   (SPEC §5: "logged with the channel and pointer, not the payload"). Names
//!   of properties the schema does not allow are still quoted; the reason and
//!   the pointer are bounded ([`MAX_REASON_BYTES`], [`MAX_POINTER_BYTES`]).
//!
//! # Nesting depth
//!
//! Validation recurses along the payload's nesting, so its stack use grows
//! with the payload's depth. [`Schema::validate_text`] parses with
//! `serde_json`, whose recursion limit (128 levels) stays on: deeper text is
//! a [`Violation`], never a stack overflow. Callers of [`Schema::validate`]
//! must pass values that come from such a depth-limited parser (the Bayeux
//! message parser is one); a [`Value`] built by other means with tens of
//! thousands of levels could overflow the stack here, and in its own `Drop`.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{PatternOptions, ValidationError, Validator};
use serde_json::Value;

/// The longest [`Violation::reason`], in bytes. A reason goes back to the
/// sender in an error string and into a log line; the engine's messages are
/// well under this, but a list of unexpected property names is not bounded.
pub const MAX_REASON_BYTES: usize = 200;

/// The longest [`Violation::pointer`], in bytes. The pointer is made of the
/// payload's own property names, which the sender chooses: it is cut here
/// (ending in `…`) so an error reply cannot echo a megabyte-long key.
pub const MAX_POINTER_BYTES: usize = 256;

/// The largest schema file [`Schema::from_file`] reads. Schemas are
/// configuration, a few kilobytes; a larger file is a mistake (a payload or a
/// log named in the wrong place), refused rather than compiled.
pub const MAX_SCHEMA_FILE_BYTES: u64 = 1024 * 1024;

/// A compiled JSON Schema. Cloning is cheap (a reference count); it is
/// `Send + Sync` and checks payloads concurrently.
#[derive(Clone)]
pub struct Schema {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the schema came from (a file path or a caller's name), for
    /// `Debug` and log lines.
    source: String,
    validator: Validator,
}

impl fmt::Debug for Schema {
    // The source, not the schema: a schema can be large, and its name is
    // what an operator looks for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// Reads the JSON file at `path` and compiles it.
    ///
    /// # Errors
    ///
    /// [`SchemaError::Io`] if the file cannot be read, [`SchemaError::Json`]
    /// if it is not JSON, [`SchemaError::Invalid`] if it is not a valid schema
    /// (including a `$ref` that is not local) or is larger than
    /// [`MAX_SCHEMA_FILE_BYTES`]. Each names the file.
    pub fn from_file(path: &Path) -> Result<Schema, SchemaError> {
        let io_error = |source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_error)?;
        let mut text = String::new();
        file.take(MAX_SCHEMA_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io_error)?;
        if text.len() as u64 > MAX_SCHEMA_FILE_BYTES {
            return Err(SchemaError::Invalid {
                path: path.to_path_buf(),
                message: format!("larger than {MAX_SCHEMA_FILE_BYTES} bytes"),
            });
        }
        let value: Value = serde_json::from_str(&text).map_err(|source| SchemaError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::compile(path.display().to_string(), &value)
    }

    /// Compiles `schema`; `source_name` names it in errors and in `Debug`
    /// (a file path, or something like `"config: /chat"`).
    ///
    /// # Errors
    ///
    /// [`SchemaError::Invalid`], naming `source_name`, if `schema` is not a
    /// valid schema or has a `$ref` that is not local.
    pub fn from_value(source_name: &str, schema: &Value) -> Result<Schema, SchemaError> {
        Self::compile(source_name.to_owned(), schema)
    }

    fn compile(source: String, schema: &Value) -> Result<Schema, SchemaError> {
        let validator = jsonschema::options()
            // No retrieval of any kind; the `resolve-http`/`resolve-file`
            // features are off too, this makes the refusal explicit.
            .offline()
            .should_validate_formats(false)
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map_err(|error| SchemaError::Invalid {
                path: PathBuf::from(&source),
                message: compile_error_message(&error),
            })?;
        Ok(Schema {
            inner: Arc::new(Inner { source, validator }),
        })
    }

    /// Where this schema came from: the file path or the `source_name` it
    /// was compiled with.
    pub fn source_name(&self) -> &str {
        &self.inner.source
    }

    /// Checks `instance`, reporting the first failure only.
    ///
    /// `instance` must come from a parser with a recursion limit, such as
    /// `serde_json`'s default one (see the [module docs](self#nesting-depth)).
    ///
    /// # Errors
    ///
    /// The first [`Violation`] found.
    pub fn validate(&self, instance: &Value) -> Result<(), Violation> {
        let validator = &self.inner.validator;
        // The boolean check builds no error values and no locations: it is
        // the fast path for the common case, a valid message. The error is
        // computed, by a second walk, only for a payload that failed.
        if validator.is_valid(instance) {
            return Ok(());
        }
        match validator.validate(instance) {
            Err(error) => Err(Violation::from_error(&error)),
            // The two walks agree; should they ever not, the second one, the
            // one that can say why, decides.
            Ok(()) => Ok(()),
        }
    }

    /// Parses `text` (a raw socket text message) with `serde_json`, its
    /// recursion limit on, and checks it.
    ///
    /// # Errors
    ///
    /// A [`Violation`] at pointer `""` with a reason starting with
    /// `not JSON: ` if `text` does not parse (which includes nesting deeper
    /// than 128 levels), or the first failure of the parsed value.
    pub fn validate_text(&self, text: &str) -> Result<(), Violation> {
        let value: Value = serde_json::from_str(text).map_err(|error| Violation {
            pointer: String::new(),
            reason: bounded(&format!("not JSON: {error}"), MAX_REASON_BYTES),
        })?;
        self.validate(&value)
    }
}

/// Describes a compile failure in one line: where in the schema, and why.
fn compile_error_message(error: &ValidationError<'_>) -> String {
    if let ValidationErrorKind::Referencing(reference) = error.kind() {
        let hint = match reference {
            jsonschema::ReferencingError::Unretrievable { .. } => {
                " (schemas are compiled offline: only references inside \
                 the schema document, like #/$defs/name, are followed)"
            }
            _ => "",
        };
        return one_line(&format!("unresolvable reference: {reference}{hint}"));
    }
    // For a schema that fails its meta-schema, the "instance" is the schema:
    // its path is where in the schema the mistake is.
    let at = error.instance_path().as_str();
    let at = if at.is_empty() { "/" } else { at };
    one_line(&format!("at {at}: {error}"))
}

/// A payload that failed its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The JSON pointer (RFC 6901) of the failing part of the payload; `""`
    /// for the payload itself. At most [`MAX_POINTER_BYTES`].
    pub pointer: String,
    /// Why it failed, in one short line that does not quote the payload's
    /// values. At most [`MAX_REASON_BYTES`].
    pub reason: String,
}

impl Violation {
    fn from_error(error: &ValidationError<'_>) -> Violation {
        Violation {
            pointer: bounded(error.instance_path().as_str(), MAX_POINTER_BYTES),
            reason: bounded(&error.masked().to_string(), MAX_REASON_BYTES),
        }
    }
}

impl fmt::Display for Violation {
    /// `<pointer>: <reason>`, the text after `400::` in a Bayeux error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.reason)
    }
}

impl std::error::Error for Violation {}

/// `text` on one line (control characters replaced), cut at a character
/// boundary to at most `max` bytes, ending in `…` when cut.
fn bounded(text: &str, max: usize) -> String {
    const ELLIPSIS: char = '…';
    let text = one_line(text);
    if text.len() <= max {
        return text;
    }
    let mut end = max - ELLIPSIS.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = text[..end].to_owned();
    cut.push(ELLIPSIS);
    cut
}

/// Control characters (newlines above all) replaced by spaces, so a reason
/// cannot forge a second log line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A schema that could not be loaded or compiled. Every variant names the
/// file (or the `source_name` given to [`Schema::from_value`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum SchemaError {
    /// The file could not be read.
    Io {
        /// The schema file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON.
    Json {
        /// The schema file.
        path: PathBuf,
        /// The parse error, with its line and column.
        source: serde_json::Error,
    },
    /// The document is not a valid JSON Schema, has a `$ref` that is not
    /// local, or is too large.
    Invalid {
        /// The schema file, or the `source_name`.
        path: PathBuf,
        /// What is wrong and where in the schema, in one line.
        message: String,
    },
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::Io { path, source } => {
                write!(f, "schema {}: cannot read: {source}", path.display())
            }
            SchemaError::Json { path, source } => {
                write!(f, "schema {}: not JSON: {source}", path.display())
            }
            SchemaError::Invalid { path, message } => {
                write!(f, "schema {}: invalid: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for SchemaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SchemaError::Io { source, .. } => Some(source),
            SchemaError::Json { source, .. } => Some(source),
            SchemaError::Invalid { .. } => None,
        }
    }
}

/// The schemas of raw WebSocket application paths: exact paths (`"/chat"`,
/// no query string) to the [`Schema`] their messages must satisfy. A path
/// with no entry is not validated.
#[derive(Debug, Clone, Default)]
pub struct PathSchemas {
    by_path: HashMap<String, Schema>,
}

impl PathSchemas {
    /// No paths.
    pub fn new() -> PathSchemas {
        PathSchemas::default()
    }

    /// Sets the schema of `path`, returning the one it replaces.
    pub fn insert(&mut self, path: impl Into<String>, schema: Schema) -> Option<Schema> {
        self.by_path.insert(path.into(), schema)
    }

    /// The schema of exactly `path`, if any.
    pub fn for_path(&self, path: &str) -> Option<&Schema> {
        self.by_path.get(path)
    }

    /// How many paths have a schema.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether no path has a schema.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

impl<P: Into<String>> FromIterator<(P, Schema)> for PathSchemas {
    fn from_iter<I: IntoIterator<Item = (P, Schema)>>(iter: I) -> PathSchemas {
        PathSchemas {
            by_path: iter.into_iter().map(|(p, s)| (p.into(), s)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(value: Value) -> Schema {
        Schema::from_value("test", &value).expect("valid schema")
    }

    #[test]
    fn schema_is_send_sync_and_debug_names_the_source() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Schema>();
        let s = schema(json!({"type": "object", "description": "a long text here"}));
        let debug = format!("{s:?}");
        assert!(debug.contains("\"test\""), "{debug}");
        assert!(!debug.contains("long text"), "{debug}");
    }

    #[test]
    fn bounded_cuts_at_a_char_boundary_and_removes_newlines() {
        assert_eq!(bounded("a\nb", 10), "a b");
        let cut = bounded(&"é".repeat(100), 11);
        assert!(cut.len() <= 11, "{cut}");
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("short", 5), "short");
    }

    #[test]
    fn violation_displays_pointer_then_reason() {
        let v = Violation {
            pointer: "/user/name".into(),
            reason: "value is not of type \"string\"".into(),
        };
        assert_eq!(v.to_string(), "/user/name: value is not of type \"string\"");
    }

    #[test]
    fn reason_does_not_quote_the_payload_value() {
        let s = schema(json!({"properties": {"text": {"maxLength": 3}}}));
        let v = s.validate(&json!({"text": "secret-value"})).unwrap_err();
        assert_eq!(v.pointer, "/text");
        assert!(!v.reason.contains("secret-value"), "{v}");
    }

    #[test]
    fn long_property_names_are_bounded() {
        let s = schema(json!({"additionalProperties": {"type": "integer"}}));
        let key = "k".repeat(10_000);
        let v = s.validate(&json!({ key.clone(): "x" })).unwrap_err();
        assert!(v.pointer.len() <= MAX_POINTER_BYTES);
        assert!(v.pointer.starts_with("/kkk"));
        assert!(v.reason.len() <= MAX_REASON_BYTES);
    }

    #[test]
    fn backtracking_patterns_are_refused_at_compile() {
        let err = Schema::from_value("look", &json!({"pattern": "(?=a)a"})).unwrap_err();
        assert!(matches!(err, SchemaError::Invalid { .. }), "{err}");
        assert!(
            err.to_string().starts_with("schema look: invalid: "),
            "{err}"
        );
    }

    #[test]
    fn path_schemas_match_exact_paths() {
        let map: PathSchemas = [("/chat", schema(json!({"type": "object"})))]
            .into_iter()
            .collect();
        assert_eq!(map.len(), 1);
        assert!(map.for_path("/chat").is_some());
        assert!(map.for_path("/chat/").is_none());
        assert!(map.for_path("/").is_none());
    }
}
