//! The page around every page: the header with the sections and who is signed in, the
//! stylesheet and script (both served from the binary), and the small pieces pages share:
//! times (shown in the viewer's zone by the script, UTC without it), states as words, sizes,
//! error pages and empty states that say what to do next.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::Viewer;

/// The console's sections, in the order of the header.
pub(crate) const SECTIONS: [(&str, &str); 8] = [
    ("/", "Fleet"),
    ("/models", "Models"),
    ("/rollouts", "Rollouts"),
    ("/runs", "Runs"),
    ("/compare", "Compare"),
    ("/regressions", "Regressions"),
    ("/schedules", "Schedules"),
    ("/tokens", "Tokens"),
];

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · edgefleet" }
        link rel="stylesheet" href=(super::assets::STYLE_PATH.as_str());
        link rel="icon" href="data:,";
        script src=(super::assets::SCRIPT_PATH.as_str()) defer {}
    }
}

/// A signed-in page: `section` is the header link it belongs to.
pub(crate) fn page(title: &str, section: &str, viewer: &Viewer, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "edgefleet" }
                    nav aria-label="Sections" {
                        ul {
                            @for (href, name) in SECTIONS {
                                li {
                                    @if name == section {
                                        a href=(href) aria-current="page" { (name) }
                                    } @else {
                                        a href=(href) { (name) }
                                    }
                                }
                            }
                        }
                    }
                    form.who method="post" action="/sign-out" {
                        span { (viewer.name()) " (" (viewer.role.as_str()) ")" }
                        (csrf(viewer))
                        button.link type="submit" { "Sign out" }
                    }
                }
                main #main { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page without the header (signing in).
pub(crate) fn bare(title: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body { (body) }
        }
    };
    Html(markup.into_string())
}

/// The hidden field every form of a signed-in page posts.
pub(crate) fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.session.csrf); }
}

/// An error as a page of its own, with the status it stands for.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        main.narrow {
            h1 { (status.canonical_reason().unwrap_or("Error")) }
            p.problem role="alert" { (message) }
            p { a href="/" { "Back to the fleet" } }
        }
    };
    (status, bare("Error", body)).into_response()
}

/// A moment: `<time>` with the UTC text, which the script shows in the viewer's zone.
pub(crate) fn time(unix_ms: i64) -> Markup {
    if unix_ms <= 0 {
        return html! { span.muted { "never" } };
    }
    let Some(at) = chrono::DateTime::from_timestamp_millis(unix_ms) else {
        return html! { span.muted { "never" } };
    };
    let exact = at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let text = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(exact) { (text) } }
}

/// A state as a word with a shape beside it (never colour alone): `data-tone` picks the colour.
pub(crate) fn state(text: &str) -> Markup {
    let tone = match text {
        "succeeded" | "done" | "healthy" | "online" | "installed" | "passed" | "active" | "ran"
        | "better" | "acknowledged" => "good",
        "failed" | "aborted" | "rolled_back" | "rolled back" | "offline" | "revoked" | "worse"
        | "unhealthy" | "refused" | "open" => "bad",
        "paused" | "waiting" | "pending" | "missed" | "skipped" => "wait",
        _ => "busy",
    };
    let mark = match tone {
        "good" => "✓",
        "bad" => "✗",
        "wait" => "‖",
        _ => "•",
    };
    html! { span.state data-tone=(tone) { span aria-hidden="true" { (mark) " " } (text) } }
}

/// Bytes in words.
pub(crate) fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ if (n as f64) < 1024.0 * MIB => format!("{:.1} MiB", n as f64 / MIB),
        _ => format!("{:.2} GiB", n as f64 / MIB / 1024.0),
    }
}

/// What to do when a list is empty.
pub(crate) fn empty(what: &str, command: &str) -> Markup {
    html! {
        div.empty {
            p { (what) }
            p { "Next: " code { (command) } }
        }
    }
}

/// A table that scrolls sideways inside itself on a narrow screen, never the page.
pub(crate) fn table(caption: &str, head: &[&str], rows: Markup) -> Markup {
    html! {
        div.scroll role="region" aria-label=(caption) tabindex="0" {
            table {
                caption { (caption) }
                thead { tr { @for h in head { th scope="col" { (h) } } } }
                tbody { (rows) }
            }
        }
    }
}

/// An SVG drawn by the server, placed inline.
pub(crate) fn svg(svg: &str) -> PreEscaped<&str> {
    PreEscaped(svg)
}
