//! Known-answer vectors minted by npm `jose` (see `tests/vectors/generate.mjs`), compiled in
//! with `include_str!` so the same tests run natively and in the browser.

use crate::time::UnixTime;
use serde_json::Value;

static RAW: &str = include_str!("../testdata/jose-vectors.json");

fn all() -> Value {
    serde_json::from_str(RAW).expect("testdata/jose-vectors.json is valid JSON")
}

/// A vector: strings as they are, objects re-serialized.
pub(crate) fn get(name: &str) -> String {
    match &all()[name] {
        Value::String(s) => s.clone(),
        Value::Null => panic!("no vector {name}"),
        other => other.to_string(),
    }
}

/// The fixed "now" the vectors were minted for.
pub(crate) fn t0() -> UnixTime {
    UnixTime(all()["t0"].as_u64().expect("t0"))
}
