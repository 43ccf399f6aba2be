//! The built-in web dashboard: static HTML, JS and CSS compiled into the binary
//! (no build step, no CDN), served by the operations listener at `/` and
//! `/dashboard`, its assets under `/dashboard/`.
//!
//! The page holds no data: its script calls the admin API (`/api/stats` every
//! second, `/api/clients`, `/api/streams`, `DELETE /api/clients/<id>`) with the admin token,
//! which it takes from the URL fragment (`/dashboard#token=…`, never sent to the
//! server) or a form, and keeps in the tab's `sessionStorage`. A strict
//! Content-Security-Policy allows only the page's own files: no inline script or
//! style, no other origin.

use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::StatusCode;

use super::http::{respond, HttpResponse};

/// Only this origin's files; the page may only talk to its own API.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: (path, content type, body).
type Asset = (&'static str, &'static str, &'static [u8]);

const INDEX: &[u8] = include_bytes!("index.html");

const ASSETS: &[Asset] = &[
    ("/", "text/html; charset=utf-8", INDEX),
    ("/dashboard", "text/html; charset=utf-8", INDEX),
    ("/dashboard/", "text/html; charset=utf-8", INDEX),
    (
        "/dashboard/dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("dashboard.js"),
    ),
    (
        "/dashboard/dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("dashboard.css"),
    ),
    (
        "/dashboard/favicon.svg",
        "image/svg+xml",
        include_bytes!("favicon.svg"),
    ),
];

/// The dashboard file at `path`, or None (the caller answers 404).
pub fn serve(path: &str) -> Option<HttpResponse> {
    let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let mut response = respond(StatusCode::OK, content_type, *body);
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 4] = [
        (CACHE_CONTROL, "no-cache"),
        (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_are_served_with_their_type_and_policy() {
        for (path, wanted) in [
            ("/", "text/html; charset=utf-8"),
            ("/dashboard", "text/html; charset=utf-8"),
            ("/dashboard/dashboard.js", "text/javascript; charset=utf-8"),
            ("/dashboard/dashboard.css", "text/css; charset=utf-8"),
        ] {
            let response = serve(path).unwrap_or_else(|| panic!("{path} not served"));
            let headers = response.headers();
            assert_eq!(headers[hyper::header::CONTENT_TYPE], wanted);
            assert_eq!(headers[CACHE_CONTROL], "no-cache");
            assert_eq!(
                headers[CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY_VALUE
            );
        }
        assert!(serve("/dashboard/nothing.js").is_none());
        assert!(serve("/index.html").is_none());
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(INDEX).expect("UTF-8");
        assert!(html.contains(r#"<script src="/dashboard/dashboard.js""#));
        assert_eq!(
            html.matches("<script").count(),
            1,
            "only the external script"
        );
        assert!(!html.contains("<style"));
        assert!(!html.contains("style="));
        for handler in ["onclick=", "onload=", "onsubmit=", "onerror="] {
            assert!(!html.contains(handler), "no inline event handlers");
        }
    }
}
