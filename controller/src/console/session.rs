//! Signing in and out, and the sessions behind them: an admin token is traded for a random
//! session id kept in a cookie (`HttpOnly`, `Secure`, `SameSite=Strict`, `__Host-`); the
//! console keeps the token's hash, its name and a CSRF token per session, in memory. A session
//! ends at sign-out, after 30 minutes without a request or 12 hours in all, and as soon as its
//! token is revoked (every request asks the store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use edgefleet_proto::tokens::{secret_hash, AdminToken};
use maud::html;
use rand::RngCore;

use super::{guard, layout, Console};
use crate::trust::tokens::Role;

/// The session cookie's name; `__Host-`: only set over HTTPS, for this host and path `/`.
const COOKIE: &str = "__Host-edgefleet-session";

/// Sessions kept at most; past it, the least recently used makes way.
const MAX_SESSIONS: usize = 10_000;
/// Sessions of one token kept at most; past it, that token's least recently used makes way (a
/// script signing in again and again cannot crowd out everyone else's).
const MAX_SESSIONS_PER_TOKEN: usize = 16;

/// One signed-in browser.
#[derive(Debug)]
pub(crate) struct Session {
    /// SHA-256 of the admin token's secret: what the admin service checks on every call.
    pub(crate) token_hash: String,
    /// The token's name, for the page and the log.
    pub(crate) token_name: String,
    /// The form field every POST of this session carries.
    pub(crate) csrf: String,
    created: Instant,
    last_used: Mutex<Instant>,
}

/// Every live session, by id.
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
    idle: Duration,
    lifetime: Duration,
}

impl Sessions {
    pub(crate) fn new(idle: Duration, lifetime: Duration) -> Sessions {
        Sessions {
            by_id: Mutex::default(),
            idle,
            lifetime,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, session: &Session, now: Instant) -> bool {
        let last = *session.last_used.lock().unwrap_or_else(|p| p.into_inner());
        now.saturating_duration_since(session.created) > self.lifetime
            || now.saturating_duration_since(last) > self.idle
    }

    /// A new session for the token: its id. Expired sessions are dropped first; then, if the
    /// token or the console holds too many, the least recently used of them.
    fn create(&self, token_hash: String, token_name: String) -> String {
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| !self.expired(s, now));
        let last_used = |s: &Session| *s.last_used.lock().unwrap_or_else(|p| p.into_inner());
        let evict_oldest = |sessions: &mut HashMap<String, Arc<Session>>, same_token: bool| {
            let oldest = sessions
                .iter()
                .filter(|(_, s)| !same_token || s.token_hash == token_hash)
                .min_by_key(|(_, s)| last_used(s))
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                sessions.remove(&id);
            }
        };
        while sessions
            .values()
            .filter(|s| s.token_hash == token_hash)
            .count()
            >= MAX_SESSIONS_PER_TOKEN
        {
            evict_oldest(&mut sessions, true);
        }
        while sessions.len() >= MAX_SESSIONS {
            evict_oldest(&mut sessions, false);
        }
        let id = random_hex();
        sessions.insert(
            id.clone(),
            Arc::new(Session {
                token_hash,
                token_name,
                csrf: random_hex(),
                created: now,
                last_used: Mutex::new(now),
            }),
        );
        id
    }

    /// The session, if it has not expired; a person's request (`touch`) starts its idle time
    /// again, a page's own live updates and polls do not.
    fn get(&self, id: &str, touch: bool) -> Option<Arc<Session>> {
        self.get_at(id, touch, Instant::now())
    }

    fn get_at(&self, id: &str, touch: bool, now: Instant) -> Option<Arc<Session>> {
        let mut sessions = self.lock();
        let session = sessions.get(id)?.clone();
        if self.expired(&session, now) {
            sessions.remove(id);
            return None;
        }
        if touch {
            *session.last_used.lock().unwrap_or_else(|p| p.into_inner()) = now;
        }
        Some(session)
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// 256 random bits, as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The signed-in user of a request: their session and what their token may do now.
#[derive(Clone)]
pub(crate) struct Viewer {
    pub(crate) session: Arc<Session>,
    pub(crate) role: Role,
}

impl Viewer {
    pub(crate) fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    pub(crate) fn name(&self) -> &str {
        &self.session.token_name
    }
}

/// Why a request has no viewer.
pub(crate) enum NotSignedIn {
    /// No session, or one that ended: a page goes to the sign-in page; anything else gets 401.
    Gone { page: bool, next: String },
    /// The store could not say whether the token is still valid.
    Store(String),
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::Gone { page: true, next } => {
                Redirect::to(&format!("/sign-in?next={}", encode_next(&next))).into_response()
            }
            NotSignedIn::Gone { page: false, .. } => (
                StatusCode::UNAUTHORIZED,
                "not signed in, or the session ended: sign in again",
            )
                .into_response(),
            NotSignedIn::Store(e) => layout::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot check the session: {e}"),
            ),
        }
    }
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session the request's cookie names, checked against the store (`None`: no cookie, or a
/// session that ended); `touch`: a person's request, which starts its idle time again.
pub(crate) async fn viewer_of(
    console: &Console,
    headers: &HeaderMap,
    touch: bool,
) -> Result<Option<Viewer>, String> {
    let Some(id) = cookie_value(headers, COOKIE) else {
        return Ok(None);
    };
    let Some(session) = console.sessions.get(id, touch) else {
        return Ok(None);
    };
    let store = console.ctl.store.clone();
    let hash = session.token_hash.clone();
    let found = tokio::task::spawn_blocking(move || store.admin_token(&hash))
        .await
        .map_err(|e| e.to_string())?;
    match found {
        Ok(Some((_, role))) => Ok(Some(Viewer { session, role })),
        Ok(None) => {
            // Revoked: the session dies with its token.
            console.sessions.remove(id);
            tracing::info!(token = %session.token_name, "console session ended: its token was revoked");
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = NotSignedIn;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Console,
    ) -> Result<Self, Self::Rejection> {
        // A page's live updates and polls keep no session alive by themselves.
        let by_page = parts.uri.path().starts_with("/part/") || parts.uri.path() == "/events";
        match viewer_of(console, &parts.headers, !by_page).await {
            Ok(Some(viewer)) => {
                // A signed-in browser's connection may stay open (a page's live stream).
                if let Some(slot) = parts.extensions.get::<super::ConnectionSlot>() {
                    slot.0.authenticate();
                }
                Ok(viewer)
            }
            Ok(None) => Err(NotSignedIn::Gone {
                page: parts.method == axum::http::Method::GET && !by_page,
                next: parts
                    .uri
                    .path_and_query()
                    .map_or("/".into(), |p| p.to_string()),
            }),
            Err(e) => Err(NotSignedIn::Store(e)),
        }
    }
}

/// `next` for the sign-in page's query (only a path of this console is ever followed).
fn encode_next(next: &str) -> String {
    next.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A path of this console to go to after signing in (anything else goes to the fleet). Only
/// visible ASCII: a browser drops tabs and line breaks from a URL, so `/\t/evil.example` would
/// become `//evil.example`, another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            n.into()
        }
        _ => "/".into(),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct SignInQuery {
    next: Option<String>,
}

pub(crate) async fn sign_in_page(Query(query): Query<SignInQuery>) -> Response {
    sign_in_form(StatusCode::OK, &safe_next(query.next.as_deref()), None)
}

fn sign_in_form(status: StatusCode, next: &str, problem: Option<&str>) -> Response {
    let body = html! {
        main.narrow {
            h1 { "Sign in to edgefleet" }
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            form method="post" action="/sign-in" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="off" required autofocus
                    placeholder="efa1.…";
                button type="submit" { "Sign in" }
            }
            p.hint {
                "An operator or viewer token: " code { "edgefleet admin tokens create --name NAME --role viewer" }
                ". The console keeps a session, never the token."
            }
        }
    };
    (status, layout::bare("Sign in", body)).into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct SignInForm {
    token: String,
    next: Option<String>,
}

pub(crate) async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if let Some(refused) = guard::refuse_other_origin(&console, &headers) {
        return refused;
    }
    let next = safe_next(form.next.as_deref());
    let Ok(token) = AdminToken::parse(form.token.trim()) else {
        return sign_in_form(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That is not an admin token (they look like efa1.…)."),
        );
    };
    let hash = secret_hash(&token.secret);
    let store = console.ctl.store.clone();
    let lookup = hash.clone();
    let found = tokio::task::spawn_blocking(move || store.admin_token(&lookup)).await;
    let name = match found {
        Ok(Ok(Some((name, _)))) => name,
        Ok(Ok(None)) => {
            if let Some(left_out) = console.may_log_refusal() {
                tracing::warn!(
                    left_out,
                    "console sign-in refused: the token is not valid here"
                );
            }
            return sign_in_form(
                StatusCode::UNAUTHORIZED,
                &next,
                Some(
                    "This token is not valid on this controller (revoked, or made by another one).",
                ),
            );
        }
        Ok(Err(e)) => {
            return layout::error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
        Err(e) => return layout::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let id = console.sessions.create(hash, name.clone());
    tracing::info!(token = %name, "console sign-in");
    let cookie = format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict");
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of hex"),
    );
    response
}

pub(crate) async fn sign_out(
    State(console): State<Console>,
    headers: HeaderMap,
    viewer: Viewer,
    Form(form): Form<guard::CsrfField>,
) -> Response {
    if let Some(refused) = guard::refuse_post(&console, &headers, &viewer, &form.csrf) {
        return refused;
    }
    if let Some(id) = cookie_value(&headers, COOKIE) {
        console.sessions.remove(id);
    }
    tracing::info!(token = %viewer.name(), "console sign-out");
    let mut response = Redirect::to("/sign-in").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-edgefleet-session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_or_old_and_at_sign_out() {
        let sessions = Sessions::new(Duration::from_millis(50), Duration::from_secs(3600));
        let id = sessions.create("h".into(), "ops".into());
        assert_eq!(sessions.get(&id, true).unwrap().token_name, "ops");
        assert!(sessions.get("not-an-id", true).is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.get(&id, true).is_none(), "idle past its limit");
        assert_eq!(sessions.len(), 0);

        let old = Sessions::new(Duration::from_secs(3600), Duration::from_millis(50));
        let id = old.create("h".into(), "ops".into());
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            old.get(&id, true).is_none(),
            "past its lifetime even in use"
        );

        let id = sessions.create("h".into(), "ops".into());
        sessions.remove(&id);
        assert!(sessions.get(&id, true).is_none());
    }

    #[test]
    fn a_page_left_open_does_not_keep_its_session_alive() {
        let minute = Duration::from_secs(60);
        let sessions = Sessions::new(30 * minute, 12 * 60 * minute);
        let id = sessions.create("h".into(), "ops".into());
        let start = sessions.get(&id, false).unwrap().created;
        // A click at minute 10 starts the idle time again; live updates every minute do not.
        assert!(sessions.get_at(&id, true, start + 10 * minute).is_some());
        for m in 11..=40 {
            assert!(
                sessions.get_at(&id, false, start + m * minute).is_some(),
                "a live update at minute {m}"
            );
        }
        assert!(
            sessions.get_at(&id, false, start + 41 * minute).is_none(),
            "31 minutes after the last click"
        );
    }

    #[test]
    fn one_token_signing_in_again_and_again_keeps_sixteen_sessions() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let other = sessions.create("other".into(), "b".into());
        let first = sessions.create("h".into(), "a".into());
        for _ in 0..100 {
            sessions.create("h".into(), "a".into());
        }
        assert_eq!(sessions.len(), MAX_SESSIONS_PER_TOKEN + 1);
        assert!(sessions.get(&first, true).is_none(), "the oldest made way");
        assert!(
            sessions.get(&other, true).is_some(),
            "another token's session stays"
        );
    }

    #[test]
    fn ids_and_csrf_tokens_are_random_and_distinct() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let a = sessions.create("h".into(), "a".into());
        let b = sessions.create("h".into(), "b".into());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(
            sessions.get(&a, true).unwrap().csrf,
            sessions.get(&b, true).unwrap().csrf
        );
    }

    #[test]
    fn only_a_path_of_the_console_is_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/rollouts/r1")), "/rollouts/r1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/a\r\nSet-Cookie: x=1")), "/");
        assert_eq!(safe_next(Some("/a b")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
