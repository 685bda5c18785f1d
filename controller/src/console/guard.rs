//! What every response carries (a strict Content-Security-Policy, no caching of pages that hold
//! fleet data, no framing) and what every POST must show: that the browser sent it from this
//! console's own origin, and the session's CSRF token.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::session::Viewer;
use super::{layout, Console};

/// Nothing but this origin: no inline script, no inline style attribute, no frames, forms that
/// post only here. Charts are inline SVG, drawn by the server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) async fn headers(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    // HTTP/2 names the host in the URI (`:authority`), not in a `Host` header.
    if !request.headers().contains_key(header::HOST) {
        if let Some(authority) = request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            request.headers_mut().insert(header::HOST, authority);
        }
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with a form's POST, and the
    // origin check below could not tell this console's forms from anyone's.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if console.scheme == "https" {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The request's own origin as the browser would name it: scheme and host (HTTP/2's
/// `:authority` was copied into `Host` by [`headers`]).
fn own_origin(console: &Console, headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok())?;
    Some(format!("{}://{}", console.scheme, host))
}

/// Refuses a POST that a browser did not send from this origin: its `Origin` must be ours (every
/// browser sends one with a POST), and `Sec-Fetch-Site`, where sent, `same-origin`.
pub(crate) fn same_origin(console: &Console, headers: &HeaderMap) -> Result<(), Response> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let expected = own_origin(console, headers);
    let site = headers.get("sec-fetch-site").and_then(|s| s.to_str().ok());
    let ok = matches!((origin, &expected), (Some(o), Some(e)) if o.eq_ignore_ascii_case(e))
        && site.is_none_or(|s| s == "same-origin");
    if ok {
        return Ok(());
    }
    tracing::warn!(
        origin = origin.unwrap_or("(none)"),
        expected = expected.as_deref().unwrap_or("(no host)"),
        "console refused a POST from another origin"
    );
    Err(layout::error_page(
        StatusCode::FORBIDDEN,
        "refused: this request did not come from a page of this console",
    ))
}

/// Refuses a POST without this origin and the session's CSRF token.
pub(crate) fn post(
    console: &Console,
    headers: &HeaderMap,
    viewer: &Viewer,
    csrf: &str,
) -> Result<(), Response> {
    same_origin(console, headers)?;
    let expected = viewer.session.csrf.as_bytes();
    if csrf.len() != expected.len() || !bool::from(csrf.as_bytes().ct_eq(expected)) {
        tracing::warn!(token = %viewer.name(), "console refused a POST without its CSRF token");
        return Err(layout::error_page(
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token is missing or stale; reload the page and try again",
        ));
    }
    Ok(())
}
