//! The few HTML pages of sign-in: plain forms, no script, labelled fields, readable on a phone.
//! Every page is sent with a strict CSP, `no-store` and `frame-ancestors 'none'` (no
//! clickjacking of the sign-in form).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#111}\
h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}\
button{margin-top:1.2rem;padding:.6rem 1.2rem;font-size:1rem}.error{color:#a00;border-left:3px solid #a00;padding-left:.6rem}\
.muted{color:#555;font-size:.9rem}";

/// A whole page.
pub(super) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{t} · CloudSignal</title><style>{STYLE}</style></head><body><main><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                // form-action also covers the redirect after the sign-in form: the CLI's
                // loopback listener (any port) and the dashboard on this origin
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http://127.0.0.1:* http://[::1]:*; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

/// The sign-in form of request `id` for `client`.
pub(super) fn sign_in(
    status: StatusCode,
    id: &str,
    client: &str,
    email: &str,
    error: Option<&str>,
    sso: bool,
) -> Response {
    let who = if client == super::flow::CLI {
        "the cloudsignal command line"
    } else {
        "the CloudSignal dashboard"
    };
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    page(
        status,
        "Sign in to CloudSignal",
        &format!(
            "<p>Signing in to <strong>{who}</strong>.</p>{error}\
<form method=\"post\" action=\"/oauth/authorize\"><input type=\"hidden\" name=\"request\" value=\"{id}\">\
<label for=\"email\">E-mail</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{email}\" autofocus>\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Sign in</button></form>{sso}\
<p class=\"muted\">This sign-in request is valid for 5 minutes.</p>",
            id = escape(id),
            email = escape(email),
            sso = if sso {
                format!("<p><a href=\"/oauth/sso?request={}\">Sign in with single sign-on</a></p>", escape(id))
            } else {
                String::new()
            }
        ),
    )
}

/// The form of a one-time setup link.
pub(super) fn setup(
    status: StatusCode,
    token: &str,
    fixed_email: Option<&str>,
    role: &str,
    error: Option<&str>,
) -> Response {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    let email = match fixed_email {
        Some(e) => format!("<p>Account: <strong>{}</strong></p>", escape(e)),
        None => "<label for=\"email\">E-mail</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required>".into(),
    };
    page(
        status,
        "Create your CloudSignal account",
        &format!(
            "<p>Role: <strong>{role}</strong>.</p>{error}<form method=\"post\" action=\"/setup\">\
<input type=\"hidden\" name=\"token\" value=\"{token}\">{email}\
<label for=\"name\">Name</label><input id=\"name\" name=\"name\" autocomplete=\"name\">\
<label for=\"password\">Password (12 characters or more)</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"12\">\
<button type=\"submit\">Create account</button></form>",
            role = escape(role),
            token = escape(token)
        ),
    )
}
