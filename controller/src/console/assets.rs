//! The console's stylesheet and script, compiled into the binary and served from this origin
//! only (the Content-Security-Policy allows nothing else); their paths carry a hash of their
//! content, so a browser may cache them for a year and never keeps a stale one.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const STYLE: &str = include_str!("static/console.css");
const SCRIPT: &str = include_str!("static/console.js");

fn versioned(stem: &str, ext: &str, content: &str) -> String {
    let digest = hex::encode(Sha256::digest(content.as_bytes()));
    format!("/assets/{stem}-{}.{ext}", &digest[..12])
}

/// Where the stylesheet is served.
pub(crate) static STYLE_PATH: LazyLock<String> =
    LazyLock::new(|| versioned("console", "css", STYLE));
/// Where the script is served.
pub(crate) static SCRIPT_PATH: LazyLock<String> =
    LazyLock::new(|| versioned("console", "js", SCRIPT));

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let path = format!("/assets/{name}");
    let (body, kind) = if path == *STYLE_PATH {
        (STYLE, "text/css; charset=utf-8")
    } else if path == *SCRIPT_PATH {
        (SCRIPT, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
