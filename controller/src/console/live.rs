//! The live parts of pages: each is a fragment with its own path under `/part/` (what the
//! page's script fetches while polling) and the topic of the changes that alter it; `/events`
//! streams a part as server-sent events, rendered again after each change of its topic (a few
//! changes close together make one render) and sent only when it differs from the last.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use maud::Markup;
use tokio::sync::broadcast::error::RecvError;

use super::session::{viewer_of, Viewer};
use super::{pages, Console};
use crate::server::changes;

/// Changes this close together are rendered once.
const SETTLE: Duration = Duration::from_millis(120);
/// A part is rendered again at least this often, and the session checked (a revoked token
/// ends the stream).
const RECHECK: Duration = Duration::from_secs(20);

/// A live part of a page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    /// A rollout's waves, devices, gates and timeline.
    Rollout(String),
    /// The list of rollouts.
    Rollouts,
    /// The fleet's online counts and "up to date / total".
    FleetSummary,
    /// The list of regressions.
    Regressions,
}

impl Part {
    /// The part a `/part/...` path names.
    pub(crate) fn parse(path: &str) -> Option<Part> {
        let path = path.strip_prefix("/part/").unwrap_or(path);
        match path.split_once('/') {
            Some(("rollout", id)) if !id.is_empty() && !id.contains('/') => {
                Some(Part::Rollout(id.to_string()))
            }
            None if path == "rollouts" => Some(Part::Rollouts),
            None if path == "fleet-summary" => Some(Part::FleetSummary),
            None if path == "regressions" => Some(Part::Regressions),
            _ => None,
        }
    }

    pub(crate) fn path(&self) -> String {
        match self {
            Part::Rollout(id) => format!("/part/rollout/{id}"),
            Part::Rollouts => "/part/rollouts".into(),
            Part::FleetSummary => "/part/fleet-summary".into(),
            Part::Regressions => "/part/regressions".into(),
        }
    }

    /// The topic whose changes alter it.
    fn topic(&self) -> String {
        match self {
            Part::Rollout(id) => changes::rollout_topic(id),
            Part::Rollouts => "rollout/".into(),
            Part::FleetSummary => changes::FLEET.into(),
            Part::Regressions => changes::REGRESSIONS.into(),
        }
    }

    /// How long to let changes gather before rendering: agents join by the thousand.
    fn settle(&self) -> Duration {
        match self {
            Part::FleetSummary => Duration::from_millis(500),
            _ => SETTLE,
        }
    }

    async fn render(&self, console: &Console, viewer: &Viewer) -> Result<Markup, Response> {
        match self {
            Part::Rollout(id) => pages::rollout_part(console, viewer, id).await,
            Part::Rollouts => pages::rollouts_part(console, viewer).await,
            Part::FleetSummary => pages::fleet_summary_part(console).await,
            Part::Regressions => pages::regressions_part(console, viewer).await,
        }
    }
}

/// The element a page puts a live part in; the script finds it by `data-live`.
pub(crate) fn region(part: &Part, id: &str, content: Markup) -> Markup {
    maud::html! {
        p.live-status data-for=(id) aria-live="polite" { "Live updates: connecting…" }
        div id=(id) data-live=(part.path()) { (content) }
    }
}

/// `GET /part/...`: the part alone (the script's polling).
pub(crate) async fn part(
    State(console): State<Console>,
    viewer: Viewer,
    Path(path): Path<String>,
) -> Response {
    let Some(part) = Part::parse(&path) else {
        return (StatusCode::NOT_FOUND, "no such part").into_response();
    };
    match part.render(&console, &viewer).await {
        Ok(markup) => Html(markup.into_string()).into_response(),
        Err(response) => response,
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct EventsQuery {
    part: String,
}

/// `GET /events?part=/part/...`: the part as server-sent `update` events, the first at once.
pub(crate) async fn events(
    State(console): State<Console>,
    headers: HeaderMap,
    viewer: Viewer,
    Query(query): Query<EventsQuery>,
) -> Response {
    let Some(part) = Part::parse(&query.part) else {
        return (StatusCode::NOT_FOUND, "no such part").into_response();
    };
    // Watching starts before the first render: a change in between is not lost.
    let mut watched = console.ctl.changes.watch();
    let stream = async_stream(move |tx| async move {
        let topic = part.topic();
        let mut last = String::new();
        let mut viewer = viewer;
        loop {
            match part.render(&console, &viewer).await {
                Ok(markup) => {
                    let html = markup.into_string();
                    if html != last {
                        if tx
                            .send(Event::default().event("update").data(&html))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        last = html;
                    }
                }
                Err(_) => {
                    // (An event with no data is never dispatched by a browser.)
                    let _ = tx.send(Event::default().event("gone").data("1")).await;
                    return;
                }
            }
            // Until a change of this part's topic (or the periodic look).
            let deadline = tokio::time::sleep(RECHECK);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    _ = tx.closed() => return,
                    change = watched.recv() => {
                        let look_again = match change {
                            Ok(change) => change.concerns(&topic),
                            // Changes came faster than they were read: some may be this part's.
                            Err(RecvError::Lagged(_)) => true,
                            Err(RecvError::Closed) => return,
                        };
                        if look_again {
                            // Changes close together make one render; what arrives meanwhile
                            // is covered by it.
                            tokio::time::sleep(part.settle()).await;
                            while let Ok(_)
                            | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                                watched.try_recv()
                            {}
                            break;
                        }
                    },
                }
            }
            match viewer_of(&console, &headers, false).await {
                Ok(Some(fresh)) => viewer = fresh,
                Ok(None) | Err(_) => {
                    let _ = tx
                        .send(Event::default().event("signed-out").data("1"))
                        .await;
                    return;
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// A stream of events fed by a task (ended when the browser goes away).
fn async_stream<F, Fut>(
    produce: F,
) -> impl tokio_stream::Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(tx));
    tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_named_by_its_path() {
        for part in [
            Part::Rollout("r-1".into()),
            Part::Rollouts,
            Part::FleetSummary,
            Part::Regressions,
        ] {
            assert_eq!(Part::parse(&part.path()), Some(part.clone()));
        }
        assert_eq!(Part::parse("/part/rollout/"), None);
        assert_eq!(Part::parse("/part/rollout/a/b"), None);
        assert_eq!(Part::parse("/part/secrets"), None);
    }
}
