//! JSON responses and structured logs. Tokens and secrets never reach either.

use worker::{console_log, Response, Result};

/// A JSON response with a status.
pub(crate) fn json<T: serde::Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

/// A pre-serialized JSON response.
pub(crate) fn json_text(status: u16, body: String) -> Result<Response> {
    let mut resp = Response::ok(body)?.with_status(status);
    resp.headers_mut().set("content-type", "application/json")?;
    Ok(resp)
}

/// An error response: an RFC 9457 problem document (`code`, `detail`, …), the same shape as
/// the control plane's (`cloudsignal_core::problem`).
pub(crate) fn error(status: u16, code: &str, description: &str) -> Result<Response> {
    let body = cloudsignal_core::problem::document(status, code, description);
    let mut resp = Response::ok(body.to_string())?.with_status(status);
    resp.headers_mut()
        .set("content-type", cloudsignal_core::problem::CONTENT_TYPE)?;
    if status == 401 {
        resp.headers_mut().set(
            "www-authenticate",
            &format!("Bearer error=\"{code}\", error_description=\"{description}\""),
        )?;
    }
    Ok(resp)
}

/// 500 `server_misconfigured`: the reason goes to the log (it may name a variable or a KV
/// key), never to the client.
pub(crate) fn misconfigured(reason: &str) -> Result<Response> {
    log("config_error", &[("reason", reason)]);
    error(
        500,
        "server_misconfigured",
        "the worker is not configured; see its logs",
    )
}

/// One JSON log line.
pub(crate) fn log(event: &str, fields: &[(&str, &str)]) {
    let mut obj = serde_json::Map::new();
    obj.insert("event".into(), event.into());
    for (k, v) in fields {
        obj.insert((*k).into(), (*v).into());
    }
    console_log!("{}", serde_json::Value::Object(obj));
}
