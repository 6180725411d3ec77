//! The one error shape of every CloudSignal HTTP API (the control plane and the edge worker):
//! an RFC 9457 problem document, `application/problem+json`:
//!
//! ```json
//! {"type": "https://cloudsignal.dev/problems/invalid_token", "title": "Unauthorized",
//!  "status": 401, "code": "invalid_token", "detail": "the token has expired"}
//! ```
//!
//! `code` is stable (clients branch on it); `detail` is for people and may change.

/// The media type of a problem document [RFC 9457 §3].
pub const CONTENT_TYPE: &str = "application/problem+json";

/// The problem document for `status` with the stable `code` and a human `detail`.
pub fn document(status: u16, code: &str, detail: &str) -> serde_json::Value {
    serde_json::json!({
        "type": format!("https://cloudsignal.dev/problems/{code}"),
        "title": title(status),
        "status": status,
        "code": code,
        "detail": detail,
    })
}

/// The reason phrase of the statuses the APIs answer with.
pub fn title(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let d = document(429, "rate_limited", "slow down");
        assert_eq!(d["type"], "https://cloudsignal.dev/problems/rate_limited");
        assert_eq!(d["title"], "Too Many Requests");
        assert_eq!(d["status"], 429);
        assert_eq!(d["code"], "rate_limited");
        assert_eq!(d["detail"], "slow down");
    }
}
