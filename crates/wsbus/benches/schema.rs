//! Benchmarks of payload validation (`wsbus::schema`).
//!
//! `cargo bench -p wsbus --bench schema` (`-- --quick` for a rough pass).
//!
//! A ~200-byte chat message against a small schema (object, `required`,
//! string `maxLength`, integer, array of strings, no additional properties):
//!
//! * `validate_value`: [`Schema::validate`] of the parsed message, the path a
//!   Bayeux `data` member takes;
//! * `validate_text`: [`Schema::validate_text`], parse then validate, the path
//!   of a raw socket text message;
//! * `parse_only`: `serde_json::from_str` alone, to split the above;
//! * `invalid_value`: a message failing at `/tags/1`, the error path;
//! * `engine_is_valid` / `engine_validate`: the `jsonschema` engine's boolean
//!   check against its first-error check on the valid message, the reason
//!   `validate` runs `is_valid` first.
//!
//! Medians measured when this was written (bench profile, 2 shared cores):
//! `validate_value` 36 ns, `validate_text` 467 ns (of which `parse_only`
//! 441 ns), `invalid_value` 279 ns, `engine_is_valid` 36 ns against
//! `engine_validate` 54 ns.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use wsbus::schema::Schema;

fn chat_schema() -> Value {
    json!({
        "type": "object",
        "required": ["user", "text", "room", "ts"],
        "properties": {
            "user": {"type": "string", "maxLength": 64},
            "text": {"type": "string", "maxLength": 2000},
            "room": {"type": "string", "maxLength": 64},
            "ts": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 32}}
        },
        "additionalProperties": false
    })
}

const MESSAGE: &str = r#"{"user":"ana","text":"Hello everyone, the build is green again; the deploy goes out at five. Shout in here if anything at all looks off to you.","room":"lobby","ts":1733500000,"tags":["a","b"]}"#;

fn bench(c: &mut Criterion) {
    let schema = Schema::from_value("chat", &chat_schema()).expect("schema");
    let value: Value = serde_json::from_str(MESSAGE).expect("json");
    let invalid = json!({"user":"ana","text":"hi","room":"lobby","ts":1,"tags":["a", 2]});
    assert!(schema.validate(&value).is_ok());
    assert_eq!(schema.validate(&invalid).unwrap_err().pointer, "/tags/1");

    let mut group = c.benchmark_group("schema");
    group.bench_function("validate_value", |b| {
        b.iter(|| schema.validate(black_box(&value)))
    });
    group.bench_function("validate_text", |b| {
        b.iter(|| schema.validate_text(black_box(MESSAGE)))
    });
    group.bench_function("parse_only", |b| {
        b.iter(|| serde_json::from_str::<Value>(black_box(MESSAGE)))
    });
    group.bench_function("invalid_value", |b| {
        b.iter(|| schema.validate(black_box(&invalid)))
    });

    let engine = jsonschema::options()
        .offline()
        .build(&chat_schema())
        .expect("schema");
    group.bench_function("engine_is_valid", |b| {
        b.iter(|| engine.is_valid(black_box(&value)))
    });
    group.bench_function("engine_validate", |b| {
        b.iter(|| engine.validate(black_box(&value)).is_ok())
    });
    group.finish();
}

// criterion's macros define undocumented `pub fn`s.
#[allow(missing_docs)]
mod entry {
    use super::*;
    criterion_group! {
        name = benches;
        config = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        targets = bench
    }
}
criterion_main!(entry::benches);
