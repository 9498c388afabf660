//! `/console`: the web page for the people who run the agents (agents, API keys, runs,
//! approvals, webhooks, inbound hooks, logs, usage, audit, notifications).
//!
//! A no-build client: one HTML page, one hand-written ES module and one stylesheet, compiled
//! into the binary with `include_str!`, so the console works offline and building agentq needs
//! no Node. The page talks only to the public JSON API under `/api/v1`, with the API key kept
//! in the browser's `sessionStorage` and sent as `Authorization: Bearer`; there is no cookie,
//! so there is no CSRF surface, and the key never travels in a URL. What a key may see is what
//! the API answers it: the console holds no data of its own.
//!
//! Every response under `/console` (the 404s too) carries a strict Content-Security-Policy
//! (no inline script or style, nothing but this origin), `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Where the console is served.
pub const CONSOLE_PATH: &str = "/console";

/// The policy on every console response: this origin only, no inline code, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The console's files: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", APP_JS),
    ("app.css", "text/css; charset=utf-8", APP_CSS),
    ("icon.svg", "image/svg+xml; charset=utf-8", ICON_SVG),
];

/// The console's routes, with its security headers on every answer.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(CONSOLE_PATH, get(index))
        .route(
            &format!("{CONSOLE_PATH}/"),
            get(|| async { Redirect::permanent(CONSOLE_PATH) }),
        )
        .route(&format!("{CONSOLE_PATH}/{{*file}}"), get(asset))
        .layer(axum::middleware::map_response(secure))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Revalidated each load: a new binary's assets are never mixed with old ones.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => crate::error::ApiError::from_status(StatusCode::NOT_FOUND).into_response(),
    }
}

/// Adds the console's security headers to a response.
async fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_references_only_its_own_assets() {
        for (name, _, _) in ASSETS {
            assert!(
                INDEX_HTML.contains(&format!("/console/{name}")),
                "index.html does not load {name}"
            );
        }
        for text in [INDEX_HTML, APP_JS, APP_CSS, ICON_SVG] {
            // The SVG namespace is a name, never requested.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(scheme), "an asset names {scheme}");
            }
        }
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains("style="));
        for word in INDEX_HTML.split_whitespace() {
            let handler = word.starts_with("on") && word.contains('=');
            assert!(!handler, "inline event handler: {word}");
        }
        for tag in INDEX_HTML.split("<script").skip(1) {
            assert!(tag.starts_with(" type=\"module\" src=\"/console/"), "{tag}");
        }
    }
}
