//! # @cloudsignal/client (browser package)
//!
//! The WebAssembly half of the npm package `@cloudsignal/client`, built with wasm-bindgen into
//! `pkg/`: [`Client`], core's sans-IO MQTT client ([`cloudsignal_core::client`]) driven by a
//! browser WebSocket, timers and an async token source. Everything protocol-related is
//! `cloudsignal-core`, shared with the broker and the worker. JSON stays on the JavaScript side
//! (`JSON.parse` is native and free; serde_json would double the package), so token responses
//! arrive here already normalized by `pkg/index.js`.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod adapter;

pub use adapter::Client;

use wasm_bindgen::prelude::*;

/// The package version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
