//! # @cloudsignal/client (browser package)
//!
//! The WebAssembly half of the npm package `@cloudsignal/client`, built with wasm-bindgen into
//! `pkg/`. It exposes CloudSignal's core logic to JavaScript; everything protocol-related is
//! `cloudsignal-core`, shared with the broker and the worker. This first version handles the
//! token response a backend returns (parse, `expiresAt`, `refreshAt`, the refresh delay);
//! the MQTT client state machine arrives with the client issue.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod adapter;

pub use adapter::Client;

use cloudsignal_core::exchange::TokenResponse as CoreResponse;
use cloudsignal_core::UnixTime;
use wasm_bindgen::prelude::*;

/// A token response from a CloudSignal token endpoint (worker or control plane).
#[wasm_bindgen]
pub struct TokenResponse {
    inner: CoreResponse,
}

#[wasm_bindgen]
impl TokenResponse {
    /// Parses the JSON body of a token response. Throws a `TypeError`-like error with the
    /// reason when it is not one.
    #[wasm_bindgen]
    pub fn parse(json: &str) -> Result<TokenResponse, JsError> {
        CoreResponse::from_json(json)
            .map(|inner| TokenResponse { inner })
            .map_err(|e| JsError::new(&format!("not a CloudSignal token response: {e}")))
    }

    /// The MQTT username (`<user>@<org>`).
    #[wasm_bindgen(getter)]
    pub fn username(&self) -> String {
        self.inner.mqtt_credentials.username.clone()
    }

    /// The MQTT password (the `tkn_` token).
    #[wasm_bindgen(getter)]
    pub fn password(&self) -> String {
        self.inner.mqtt_credentials.password.clone()
    }

    /// Expiry, in milliseconds since the epoch (like `Date.now()`).
    #[wasm_bindgen(getter, js_name = expiresAt)]
    pub fn expires_at(&self) -> f64 {
        self.inner.expires_at.secs() as f64 * 1000.0
    }

    /// When to fetch a new token, in milliseconds since the epoch.
    #[wasm_bindgen(getter, js_name = refreshAt)]
    pub fn refresh_at(&self) -> f64 {
        self.inner.refresh_at.secs() as f64 * 1000.0
    }

    /// Milliseconds from `now_ms` until the refresh is due (0 when already due).
    #[wasm_bindgen(js_name = refreshInMs)]
    pub fn refresh_in_ms(&self, now_ms: f64) -> f64 {
        (self.refresh_at() - now_ms).max(0.0)
    }

    /// Whether the token has expired at `now_ms`.
    #[wasm_bindgen(js_name = isExpired)]
    pub fn is_expired(&self, now_ms: f64) -> bool {
        UnixTime::from_millis(now_ms.max(0.0) as u64) >= self.inner.expires_at
    }

    /// The ACL as JSON: `{"pub": [...], "sub": [...]}`.
    #[wasm_bindgen(getter, js_name = aclJson)]
    pub fn acl_json(&self) -> String {
        serde_json::to_string(&self.inner.acl).unwrap_or_default()
    }

    /// The secure WebSocket URL of the broker.
    #[wasm_bindgen(getter, js_name = wssUrl)]
    pub fn wss_url(&self) -> String {
        self.inner.broker.wss_url.clone()
    }
}

/// The package version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &str = r#"{"mqtt_credentials":{"username":"u1@org_k7xm4pqr2n5t","password":"tkn_x"},
        "expires_at":1800003600,"refresh_at":1800003240,"acl":{"pub":["users/u1/#"],"sub":["users/u1/#"]},
        "broker":{"wss_url":"wss://localhost:18885/mqtt","mqtts_url":"mqtts://localhost:8883"}}"#;

    #[test]
    fn token_response_times_are_milliseconds() {
        let r = TokenResponse::parse(RESPONSE).ok().unwrap();
        assert_eq!(r.refresh_at(), 1_800_003_240_000.0);
        assert_eq!(r.expires_at(), 1_800_003_600_000.0);
        assert_eq!(r.refresh_in_ms(1_800_003_000_000.0), 240_000.0);
        assert_eq!(r.refresh_in_ms(1_900_000_000_000.0), 0.0);
        assert!(!r.is_expired(1_800_003_599_999.0));
        assert!(r.is_expired(1_800_003_600_000.0));
        assert_eq!(r.username(), "u1@org_k7xm4pqr2n5t");
    }
}
