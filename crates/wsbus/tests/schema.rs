//! `wsbus::schema`: compiling schemas from files and values, pointers of
//! nested failures in both drafts, and the cost bounds (depth, size).

use std::path::PathBuf;

use serde_json::{Value, json};
use wsbus::schema::{MAX_REASON_BYTES, Schema, SchemaError, Violation};

const DRAFT7: &str = "http://json-schema.org/draft-07/schema#";
const DRAFT2020: &str = "https://json-schema.org/draft/2020-12/schema";

/// The stack of a test thread by default; spelled out so that the depth
/// test proves itself whatever `RUST_MIN_STACK` says.
const TEST_STACK_BYTES: usize = 2 * 1024 * 1024;

/// A file in a directory of this test run's own, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!("wsbus-schema-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn compile(schema: Value) -> Schema {
    Schema::from_value("test", &schema).unwrap_or_else(|e| panic!("{e}"))
}

fn violation(schema: &Schema, instance: Value) -> Violation {
    schema.validate(&instance).expect_err("must fail")
}

/// A user/items schema in either draft, with a local `$ref` for the user.
fn nested_schema(draft: &str) -> Value {
    let defs = if draft == DRAFT7 {
        "definitions"
    } else {
        "$defs"
    };
    json!({
        "$schema": draft,
        "type": "object",
        "properties": {
            "user": {"$ref": format!("#/{defs}/user")},
            "items": {"type": "array", "items": {"type": "integer"}}
        },
        defs: {
            "user": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "maxLength": 8}}
            }
        }
    })
}

#[test]
fn pointers_of_nested_failures_in_both_drafts() {
    for draft in [DRAFT7, DRAFT2020] {
        let schema = compile(nested_schema(draft));
        assert_eq!(
            schema.validate(&json!({"user": {"name": "ana"}, "items": [1, 2, 3, 4]})),
            Ok(()),
            "{draft}"
        );

        let v = violation(&schema, json!({"user": {"name": 7}}));
        assert_eq!(v.pointer, "/user/name", "{draft}");
        assert!(v.reason.contains("string"), "{draft}: {v}");
        assert_eq!(v.to_string(), format!("/user/name: {}", v.reason));

        let v = violation(&schema, json!({"user": {"name": "a-very-long-name"}}));
        assert_eq!(v.pointer, "/user/name", "{draft}");
        assert!(!v.reason.contains("a-very-long-name"), "{draft}: {v}");

        let v = violation(&schema, json!({"items": [0, 1, 2, "three"]}));
        assert_eq!(v.pointer, "/items/3", "{draft}");

        let v = violation(&schema, json!({"user": {}}));
        assert_eq!(v.pointer, "/user", "{draft}");
        assert!(v.reason.contains("name"), "{draft}: {v}");

        let v = violation(&schema, json!([1]));
        assert_eq!(v.pointer, "", "{draft}");
    }
}

#[test]
fn pointer_escapes_slash_and_tilde() {
    let schema = compile(json!({"additionalProperties": {"type": "integer"}}));
    let v = violation(&schema, json!({"a/b~c": "x"}));
    assert_eq!(v.pointer, "/a~1b~0c");
}

#[test]
fn draft_is_chosen_by_dollar_schema() {
    // An array-valued `items` is a tuple in draft-07 and not a schema at all
    // in 2020-12 (which has `prefixItems`): the same document tells them apart.
    let tuple = |draft: Option<&str>| {
        let mut schema = json!({"items": [{"type": "string"}, {"type": "integer"}]});
        if let Some(draft) = draft {
            schema["$schema"] = json!(draft);
        }
        Schema::from_value("tuple", &schema)
    };
    let draft7 = tuple(Some(DRAFT7)).expect("a draft-07 tuple");
    assert_eq!(violation(&draft7, json!(["a", "b"])).pointer, "/1");
    assert!(matches!(
        tuple(Some(DRAFT2020)),
        Err(SchemaError::Invalid { .. })
    ));
    // No `$schema`: 2020-12.
    assert!(matches!(tuple(None), Err(SchemaError::Invalid { .. })));

    let prefix = compile(json!({"prefixItems": [{"type": "string"}, {"type": "integer"}]}));
    assert_eq!(violation(&prefix, json!(["a", "b"])).pointer, "/1");
}

#[test]
fn format_is_not_asserted_in_either_draft() {
    for draft in [DRAFT7, DRAFT2020] {
        let schema = compile(json!({
            "$schema": draft,
            "properties": {
                "mail": {"format": "email"},
                "at": {"format": "date-time"},
                "ip": {"format": "ipv4"}
            }
        }));
        let instance = json!({"mail": "not an email", "at": "yesterday", "ip": "999.1"});
        assert_eq!(schema.validate(&instance), Ok(()), "{draft}");
    }
}

#[test]
fn invalid_schema_file_names_the_file() {
    let file = TempFile::new("type-12.json", r#"{"type": 12}"#);
    let err = Schema::from_file(&file.0).unwrap_err();
    let SchemaError::Invalid { path, message } = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    assert_eq!(path, &file.0);
    assert!(message.contains("/type"), "{message}");
    let text = err.to_string();
    assert!(text.contains(&*file.0.to_string_lossy()), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn valid_schema_file_compiles_and_debug_names_it() {
    let file = TempFile::new("chat.json", &nested_schema(DRAFT2020).to_string());
    let schema = Schema::from_file(&file.0).unwrap();
    assert_eq!(schema.source_name(), file.0.display().to_string());
    let debug = format!("{schema:?}");
    assert!(debug.contains("chat.json"), "{debug}");
    assert!(!debug.contains("maxLength"), "{debug}");
    assert_eq!(
        violation(&schema, json!({"items": ["x"]})).pointer,
        "/items/0"
    );
}

#[test]
fn unreadable_and_non_json_files_name_the_file() {
    let missing = std::env::temp_dir().join("wsbus-schema-test-no-such-file.json");
    let err = Schema::from_file(&missing).unwrap_err();
    assert!(matches!(err, SchemaError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-file.json"), "{err}");

    let file = TempFile::new("broken.json", "{\"type\": ");
    let err = Schema::from_file(&file.0).unwrap_err();
    assert!(matches!(err, SchemaError::Json { .. }), "{err:?}");
    assert!(err.to_string().contains("broken.json"), "{err}");
}

#[test]
fn external_refs_fail_at_compile_without_fetching() {
    for reference in [
        "https://example.invalid/schemas/user.json",
        "http://127.0.0.1:9/user.json",
        "other.json",
        "file:///etc/passwd",
    ] {
        let err = Schema::from_value("refs", &json!({"properties": {"u": {"$ref": reference}}}))
            .unwrap_err();
        let SchemaError::Invalid { message, .. } = &err else {
            panic!("{reference}: expected Invalid, got {err:?}");
        };
        assert!(
            message.starts_with("unresolvable reference: "),
            "{reference}: {message}"
        );
        assert!(
            message.contains("compiled offline"),
            "{reference}: {message}"
        );
        assert!(
            err.to_string().starts_with("schema refs: invalid: "),
            "{err}"
        );
    }
    // A meta-schema that is not one the engine knows would need fetching too.
    let err = Schema::from_value("meta", &json!({"$schema": "https://example.invalid/meta"}));
    assert!(matches!(err, Err(SchemaError::Invalid { .. })), "{err:?}");
    // A local pointer to nowhere is refused too.
    let err = Schema::from_value("nowhere", &json!({"$ref": "#/$defs/missing"})).unwrap_err();
    assert!(err.to_string().contains("/$defs/missing"), "{err}");
}

#[test]
fn recursive_local_refs_work() {
    let schema = compile(json!({
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "additionalProperties": false
            }
        },
        "$ref": "#/$defs/node"
    }));
    let ok = json!({"children": [{"children": []}, {"children": [{}]}]});
    assert_eq!(schema.validate(&ok), Ok(()));
    let bad = json!({"children": [{}, {"children": [{"x": 1}]}]});
    assert_eq!(violation(&schema, bad).pointer, "/children/1/children/0");
}

#[test]
fn text_that_is_not_json_is_a_violation_at_the_root() {
    let schema = compile(json!({"type": "object"}));
    let v = schema.validate_text("hello {").unwrap_err();
    assert_eq!(v.pointer, "");
    assert!(v.reason.starts_with("not JSON: "), "{v}");
    assert!(v.reason.len() <= MAX_REASON_BYTES);
    assert_eq!(schema.validate_text(r#"{"a": 1}"#), Ok(()));
    assert_eq!(schema.validate_text("[1]").unwrap_err().pointer, "");
}

#[test]
fn deeply_nested_text_is_refused_without_overflowing_the_stack() {
    const DEPTH: usize = 100_000;
    let handle = std::thread::Builder::new()
        .name("deep".into())
        .stack_size(TEST_STACK_BYTES)
        .spawn(|| {
            // A schema that recurses with the payload, the worst case had the
            // parse let the text through.
            let schema = compile(json!({
                "$defs": {"any": {"items": {"$ref": "#/$defs/any"},
                                  "additionalProperties": {"$ref": "#/$defs/any"}}},
                "$ref": "#/$defs/any"
            }));
            let arrays = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
            let objects = format!("{}1{}", r#"{"a":"#.repeat(DEPTH), "}".repeat(DEPTH));
            for text in [arrays, objects] {
                let v = schema.validate_text(&text).unwrap_err();
                assert_eq!(v.pointer, "");
                assert!(v.reason.starts_with("not JSON: recursion limit"), "{v}");
            }
            // Just under serde_json's limit of 128 parses and validates.
            let shallow = format!("{}{}", "[".repeat(100), "]".repeat(100));
            assert_eq!(schema.validate_text(&shallow), Ok(()));
        })
        .unwrap();
    handle.join().expect("no stack overflow");
}

#[test]
fn one_mebibyte_message_is_validated() {
    let schema = compile(json!({
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "name", "tags"],
                    "properties": {
                        "id": {"type": "integer", "minimum": 0},
                        "name": {"type": "string", "maxLength": 64, "pattern": "^[a-z0-9-]+$"},
                        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}
                    },
                    "additionalProperties": false
                }
            }
        }
    }));
    let items: Vec<Value> = (0..12_000)
        .map(|i| json!({"id": i, "name": format!("item-{i}-abcdefghijklmnopqrstuvwxyz"), "tags": ["red", "green", "blue", format!("t{i}")]}))
        .collect();
    let mut message = json!({ "items": items });
    let text = message.to_string();
    assert!(text.len() >= 1024 * 1024, "{}", text.len());

    let started = std::time::Instant::now();
    assert_eq!(schema.validate_text(&text), Ok(()));
    let valid_took = started.elapsed();

    message["items"][11_000]["tags"][2] = json!("red");
    let text = message.to_string();
    let started = std::time::Instant::now();
    let v = schema.validate_text(&text).unwrap_err();
    let invalid_took = started.elapsed();
    assert_eq!(v.pointer, "/items/11000/tags");
    // Reported, not asserted: timing depends on the machine and the profile.
    eprintln!(
        "1 MiB message ({} bytes): valid in {valid_took:?}, invalid in {invalid_took:?}",
        text.len()
    );
}
