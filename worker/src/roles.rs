//! The role map: `CLOUDSIGNAL_ROLE_MAP` (a var), or, when the `CONFIG` KV namespace is bound,
//! its `role-map` key, which an operator changes without a deploy
//! (`npx wrangler kv key put --binding CONFIG role-map "$(cat roles.json)"`). Each isolate
//! re-reads it at most every `CLOUDSIGNAL_ROLE_MAP_TTL` seconds (default 60); without the key
//! the var's map applies. A stored map that does not parse fails closed: exchanges answer
//! 500 and the log names the key, rather than fall back to a map the operator replaced.

use crate::config::Config;
use cloudsignal_core::exchange::RoleMap;
use std::cell::RefCell;
use std::rc::Rc;
use worker::{Date, Env};

/// The KV binding holding operator configuration.
pub(crate) const BINDING: &str = "CONFIG";
/// Its key holding the role map's JSON.
pub(crate) const KEY: &str = "role-map";

/// The shortest edge-cache time KV accepts for reads.
const KV_MIN_CACHE_TTL: u64 = 30;

/// The map last read from KV (`None`: the key was absent) and when, in ms.
type Cached = (u64, Option<Rc<RoleMap>>);

thread_local! {
    static CACHED: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

/// Why no role map can be applied.
pub(crate) enum RoleMapError {
    /// The stored map does not parse: the operator must fix it.
    Invalid(String),
    /// KV failed and this isolate has never read the map.
    Unavailable,
}

/// The role map to apply now: `Ok(None)` means the configuration's own.
pub(crate) async fn current(env: &Env, cfg: &Config) -> Result<Option<Rc<RoleMap>>, RoleMapError> {
    let Ok(store) = env.kv(BINDING) else {
        return Ok(None);
    };
    let now = Date::now().as_millis();
    let cached = CACHED.with(|c| c.borrow().clone());
    if let Some((at, map)) = &cached {
        if now < at.saturating_add(cfg.role_map_ttl.saturating_mul(1000)) {
            return Ok(map.clone());
        }
    }
    let mut get = store.get(KEY);
    if cfg.role_map_ttl >= KV_MIN_CACHE_TTL {
        get = get.cache_ttl(cfg.role_map_ttl);
    }
    let map = match get.text().await {
        Ok(None) => None,
        Ok(Some(json)) => {
            Some(Rc::new(RoleMap::from_json(&json).map_err(|e| {
                RoleMapError::Invalid(format!("KV {BINDING} key {KEY}: {e}"))
            })?))
        }
        // a storage hiccup: the last good map, if this isolate has one
        Err(_) => return cached.map(|(_, m)| m).ok_or(RoleMapError::Unavailable),
    };
    CACHED.with(|c| *c.borrow_mut() = Some((now, map.clone())));
    Ok(map)
}
