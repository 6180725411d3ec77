//! Rate limits on exchanges through Cloudflare's rate-limiting bindings (per location):
//! `EXCHANGE_IP_LIMITER` keyed by the client address before any cryptography, and
//! `EXCHANGE_USER_LIMITER` keyed by issuer and subject once the IdP token is verified. A
//! missing binding disables that limit (logged once per isolate); `wrangler.toml` declares both.

use crate::http;
use std::cell::Cell;
use worker::Env;

/// The per-address limiter binding.
pub(crate) const IP: &str = "EXCHANGE_IP_LIMITER";
/// The per-user limiter binding.
pub(crate) const USER: &str = "EXCHANGE_USER_LIMITER";

thread_local! {
    static WARNED: Cell<bool> = const { Cell::new(false) };
}

/// Whether a request keyed by `key` may proceed under `binding`.
pub(crate) async fn allow(env: &Env, binding: &str, key: String) -> bool {
    let Ok(limiter) = env.rate_limiter(binding) else {
        if !WARNED.with(|w| w.replace(true)) {
            http::log("rate_limit_disabled", &[("binding", binding)]);
        }
        return true;
    };
    match limiter.limit(key).await {
        Ok(outcome) => outcome.success,
        Err(e) => {
            // the limiter failing open keeps sign-ins working; it is logged
            http::log(
                "rate_limit_error",
                &[("binding", binding), ("reason", &e.to_string())],
            );
            true
        }
    }
}
