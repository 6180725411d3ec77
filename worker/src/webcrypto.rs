//! ES256 and RS256 signatures checked by the Workers runtime's WebCrypto (native code) instead
//! of core's pure-Rust verifier in wasm32, where P-256 costs ~4 ms and RSA ~2.5 ms of CPU per
//! exchange. Only the signature moves: core still routes the token, picks and pins the key,
//! and checks every claim ([`IdpVerifier::verify_checked`]).
//!
//! The public key is imported once per isolate (keyed by its JWK, so a rotated key is a new
//! entry). JWS ES256 signatures are the raw `r || s` WebCrypto's ECDSA expects; RS256 is
//! RSASSA-PKCS1-v1_5 with SHA-256. If the runtime cannot import a key, [`verify`] answers
//! `None` and the caller falls back to core's own check; a signature WebCrypto rejects or
//! cannot evaluate is simply invalid.
//!
//! [`IdpVerifier::verify_checked`]: cloudsignal_core::idp::IdpVerifier::verify_checked

use cloudsignal_core::keys::{Alg, KeyEntry};
use std::cell::RefCell;
use std::collections::HashMap;
use worker::js_sys::{self, Array, Function, Object, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;

/// Imported keys kept per isolate; past this many the table starts over.
const MAX_KEYS: usize = 64;

thread_local! {
    /// Imported public keys by their JWK text.
    static KEYS: RefCell<HashMap<String, JsValue>> = RefCell::new(HashMap::new());
}

/// The WebCrypto algorithm parameters for a JWS algorithm, if WebCrypto is used for it.
fn params(alg: Alg) -> Option<Object> {
    let p = Object::new();
    let set = |k: &str, v: &str| Reflect::set(&p, &k.into(), &v.into()).is_ok();
    let ok = match alg {
        Alg::ES256 => set("name", "ECDSA") && set("namedCurve", "P-256") && set("hash", "SHA-256"),
        Alg::RS256 => set("name", "RSASSA-PKCS1-v1_5") && set("hash", "SHA-256"),
        _ => false,
    };
    ok.then_some(p)
}

/// `globalThis.crypto.subtle[method]`, with `subtle` as `this`.
fn subtle(method: &str) -> Option<(JsValue, Function)> {
    let crypto = Reflect::get(&js_sys::global(), &"crypto".into()).ok()?;
    let subtle = Reflect::get(&crypto, &"subtle".into()).ok()?;
    let f = Reflect::get(&subtle, &method.into())
        .ok()?
        .dyn_into()
        .ok()?;
    Some((subtle, f))
}

/// Calls `subtle.method(...args)` and awaits the promise.
async fn call(method: &str, args: &[&JsValue]) -> Option<JsValue> {
    let (this, f) = subtle(method)?;
    let args: Array = args.iter().copied().collect();
    let promise: Promise = f.apply(&this, &args).ok()?.dyn_into().ok()?;
    JsFuture::from(promise).await.ok()
}

/// The imported public key for `key`, importing it on first use.
async fn imported(key: &KeyEntry, params: &Object) -> Option<JsValue> {
    let jwk = key.public_jwk()?.to_string();
    if let Some(k) = KEYS.with(|m| m.borrow().get(&jwk).cloned()) {
        return Some(k);
    }
    let jwk_object = js_sys::JSON::parse(&jwk).ok()?;
    let usages: Array = std::iter::once(JsValue::from("verify")).collect();
    let crypto_key = call(
        "importKey",
        &[&"jwk".into(), &jwk_object, params, &JsValue::FALSE, &usages],
    )
    .await?;
    KEYS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= MAX_KEYS {
            m.clear();
        }
        m.insert(jwk, crypto_key.clone());
    });
    Some(crypto_key)
}

/// Checks `signature` over `signing_input` with `key` in WebCrypto: `Some(valid)`, or `None`
/// when WebCrypto is not used for this key (EdDSA, HS256) or cannot import it.
pub(crate) async fn verify(key: &KeyEntry, signing_input: &[u8], signature: &[u8]) -> Option<bool> {
    let params = params(key.alg())?;
    let crypto_key = imported(key, &params).await?;
    let signature = Uint8Array::from(signature);
    let data = Uint8Array::from(signing_input);
    let valid = call("verify", &[&params, &crypto_key, &signature, &data]).await;
    Some(valid.and_then(|v| v.as_bool()).unwrap_or(false))
}
