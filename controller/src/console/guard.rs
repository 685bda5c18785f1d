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

/// Whether a POST's headers show a browser sent it from a page of the console served over
/// `scheme`: its `Origin` is the request's own (scheme and `Host`; HTTP/2's `:authority` was
/// copied into `Host` by [`headers`]), and `Sec-Fetch-Site`, where sent, is `same-origin`.
/// Every browser sends `Origin` with a POST; a request without one is not a page's.
/// With `public` (`--console-origin`, a proxy in front), `Origin` must be that one instead.
fn from_own_origin(scheme: &str, public: Option<&str>, headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(origin) = text("origin") else {
        return false;
    };
    let expected = match (public, text("host")) {
        (Some(public), _) => public.to_string(),
        (None, Some(host)) => format!("{scheme}://{host}"),
        (None, None) => return false,
    };
    origin.eq_ignore_ascii_case(&expected)
        && text("sec-fetch-site").is_none_or(|s| s == "same-origin")
}

/// The refusal of a POST that a browser did not send from this console's origin (`None`: it
/// did).
pub(crate) fn refuse_other_origin(console: &Console, headers: &HeaderMap) -> Option<Response> {
    if from_own_origin(console.scheme, console.public_origin.as_deref(), headers) {
        return None;
    }
    if let Some(left_out) = console.may_log_refusal() {
        tracing::warn!(
            origin = headers
                .get(header::ORIGIN)
                .and_then(|o| o.to_str().ok())
                .unwrap_or("(none)"),
            left_out,
            "console refused a POST that did not come from its own pages"
        );
    }
    Some(layout::error_page(
        StatusCode::FORBIDDEN,
        "refused: this request did not come from a page of this console",
    ))
}

/// A form that carries only the session's CSRF token (a missing one is refused as a wrong one).
#[derive(serde::Deserialize)]
pub(crate) struct CsrfField {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// The refusal of a POST without this origin or without the session's CSRF token (`None`:
/// it has both).
pub(crate) fn refuse_post(
    console: &Console,
    headers: &HeaderMap,
    viewer: &Viewer,
    csrf: &str,
) -> Option<Response> {
    if let Some(refused) = refuse_other_origin(console, headers) {
        return Some(refused);
    }
    let expected = viewer.session.csrf.as_bytes();
    if csrf.len() != expected.len() || !bool::from(csrf.as_bytes().ct_eq(expected)) {
        tracing::warn!(token = %viewer.name(), "console refused a POST without its CSRF token");
        return Some(layout::error_page(
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token is missing or stale; reload the page and try again",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_a_post_from_the_consoles_own_origin_passes() {
        let host = ("host", "127.0.0.1:7480");
        let own = ("origin", "https://127.0.0.1:7480");
        assert!(from_own_origin("https", None, &headers(&[host, own])));
        assert!(from_own_origin(
            "https",
            None,
            &headers(&[host, own, ("sec-fetch-site", "same-origin")])
        ));
        // Another site, another port, plain HTTP, a sandboxed page, or no origin at all.
        for origin in [
            "https://evil.example",
            "https://127.0.0.1:7481",
            "http://127.0.0.1:7480",
            "null",
        ] {
            assert!(
                !from_own_origin("https", None, &headers(&[host, ("origin", origin)])),
                "{origin}"
            );
        }
        assert!(!from_own_origin("https", None, &headers(&[host])));
        assert!(!from_own_origin("https", None, &headers(&[own])));
        assert!(!from_own_origin(
            "https",
            None,
            &headers(&[host, own, ("sec-fetch-site", "cross-site")])
        ));
        // Behind a proxy: the proxy's origin, whatever the Host the proxy sends on.
        let public = Some("https://console.example");
        let proxied = ("origin", "https://console.example");
        assert!(from_own_origin("http", public, &headers(&[host, proxied])));
        assert!(!from_own_origin("http", public, &headers(&[host, own])));
    }
}
