//! # cloudsignal-core
//!
//! The protocol core of CloudSignal, shared by every target: the native broker, the
//! Cloudflare Worker and the browser client all link this crate, so there is exactly one
//! topic matcher, one ACL, one token verifier and one IdP verifier.
//!
//! The crate does no I/O and never reads a clock: every function that depends on time takes
//! a [`UnixTime`], and every function that needs network data (a JWKS document) is a state
//! machine that tells its caller what to fetch ([`jwks_cache::JwksCache`]). It compiles for
//! native targets and for `wasm32-unknown-unknown`.
//!
//! ```
//! use cloudsignal_core::{acl::{AclRules, AclContext}, topic::{TopicName, TopicFilter}};
//!
//! let rules = AclRules::new(["users/{user}/#"], ["users/{user}/#"]).unwrap();
//! let acl = rules.compile(&AclContext::new("alice", "org_k7xm4pqr2n5t", None)).unwrap();
//! assert!(acl.may_publish(&TopicName::parse("users/alice/inbox").unwrap()));
//! assert!(!acl.may_subscribe(&TopicFilter::parse("users/+/notifications").unwrap()));
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod acl;
pub mod apikey;
pub mod client;
pub mod exchange;
pub mod idp;
pub mod ids;
pub mod jwks_cache;
pub mod jws;
pub mod keys;
pub mod mqtt;
pub mod problem;
pub mod revocation;
pub mod session;
pub mod time;
pub mod token;
pub mod topic;

pub use time::UnixTime;

#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Marks a test that runs natively under `cargo test` and in wasm32 under
/// `wasm-bindgen-test` (headless Chromium): the same function on both targets.
#[cfg(test)]
macro_rules! both_targets_test {
    ($(#[$m:meta])* fn $name:ident() $body:block) => {
        $(#[$m])*
        #[cfg_attr(not(target_arch = "wasm32"), test)]
        #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
        fn $name() $body
    };
}
#[cfg(test)]
pub(crate) use both_targets_test;

#[cfg(test)]
pub(crate) mod test_vectors;
#[cfg(test)]
mod wycheproof_tests;
