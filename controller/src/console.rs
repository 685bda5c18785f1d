//! The web console (`serve --console-listen ADDR`): server-rendered pages of the fleet, models,
//! rollouts (live), runs, comparisons, regressions and schedules, and an operator's actions on
//! them, over HTTPS with the controller's server certificate.
//!
//! - Sign-in trades an admin token for a server-side session ([`session`]): a random id in an
//!   `HttpOnly`, `Secure`, `SameSite=Strict` cookie; the console keeps the token's hash, never
//!   the token, and every request checks that the token is still valid.
//! - Every read and every action goes through the admin service in-process
//!   ([`crate::server::admin::ConsoleCaller`]), so it is authorized exactly where the API's
//!   calls are; actions are POSTs that must come from this origin with the session's CSRF token
//!   ([`guard`]), and are logged with the token that made them.
//! - Live parts of a page are re-rendered when the controller publishes a change of theirs
//!   ([`crate::server::changes`]) and sent as server-sent events ([`live`]); the page's script
//!   polls instead while the stream is down.
//! - Everything a page needs is in the binary ([`assets`]): no request leaves this origin, and
//!   the Content-Security-Policy says so.

mod actions;
mod assets;
mod charts;
mod guard;
mod layout;
mod live;
mod pages;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::admin::AdminService;
use crate::server::admission::{accept_loop, Admission, ConnectionLimits};
use crate::server::Controller;

/// How the console is served.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Where it listens (`--console-listen`; loopback unless the operator names another).
    pub listen: String,
    /// Plain HTTP (`--console-plain-http`, for a TLS-terminating proxy in front, or an
    /// `--insecure` controller, which has no certificate).
    pub plain_http: bool,
    /// The origin browsers reach the console at when it is not this listener's own (a proxy in
    /// front: `--console-origin https://console.example`); a POST must come from it.
    pub public_origin: Option<String>,
    /// How long a session lasts without a request, and at most.
    pub session_idle: Duration,
    pub session_lifetime: Duration,
}

impl ConsoleConfig {
    pub fn new(listen: String, plain_http: bool, public_origin: Option<String>) -> ConsoleConfig {
        ConsoleConfig {
            listen,
            plain_http,
            public_origin: public_origin.map(|o| o.trim_end_matches('/').to_string()),
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen for the console on {listen}: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("the console needs the controller's certificate for HTTPS, and an --insecure controller has none: add --console-plain-http to serve it over plain HTTP")]
    NoCertificate,
    #[error("cannot set up the console's TLS: {0}")]
    Tls(String),
    #[error("--console-plain-http on {0}, which is not a loopback address, needs --console-origin https://… (the address of the proxy that terminates TLS in front of it): browsers keep the session cookie only over HTTPS")]
    PlainHttpInTheOpen(String),
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Console {
    ctl: Controller,
    admin: Arc<AdminService>,
    sessions: Arc<session::Sessions>,
    /// `https` or `http`: what the browser's `Origin` must start with.
    scheme: &'static str,
    /// `--console-origin`: the one origin POSTs must come from (otherwise scheme and `Host`).
    public_origin: Option<String>,
    /// Refusals logged at most ten a minute (anyone can send them).
    refusals: Arc<std::sync::Mutex<crate::server::admission::LogBudget>>,
    /// The fleet's counts as last rendered, and when: every open page shows the same, and a
    /// reconnecting fleet changes them thousands of times a second.
    fleet_summary: Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>,
}

/// Binds the console's listener and serves it until `shutdown`; returns the address bound.
pub async fn start(
    config: ConsoleConfig,
    controller: Controller,
    limits: &ConnectionLimits,
    shutdown: CancellationToken,
) -> Result<SocketAddr, ConsoleError> {
    if config.plain_http && config.public_origin.is_none() && !is_loopback(&config.listen) {
        return Err(ConsoleError::PlainHttpInTheOpen(config.listen));
    }
    let tls = match (&controller.authority, config.plain_http) {
        (_, true) => None,
        (None, false) => return Err(ConsoleError::NoCertificate),
        (Some(authority), false) => Some(tls_config(authority.clone())?),
    };
    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| ConsoleError::Listen {
                listen: config.listen.clone(),
                source,
            })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ConsoleError::Listen {
            listen: config.listen.clone(),
            source,
        })?;
    let console = Console {
        admin: Arc::new(AdminService::new(controller.clone())),
        ctl: controller,
        sessions: Arc::new(session::Sessions::new(
            config.session_idle,
            config.session_lifetime,
        )),
        scheme: if tls.is_some() { "https" } else { "http" },
        public_origin: config.public_origin,
        refusals: Arc::new(std::sync::Mutex::new(
            crate::server::admission::LogBudget::new(10, Duration::from_secs(60)),
        )),
        fleet_summary: Arc::default(),
    };
    let router = router(console);
    // Browsers open a few connections each; a page's live stream holds one.
    let admission = Admission::new(
        "console",
        ConnectionLimits {
            max_unauthenticated: limits.max_unauthenticated.min(256),
            max_unauthenticated_per_source: limits.max_unauthenticated_per_source.clamp(16, 64),
            ..limits.clone()
        },
    );
    tokio::spawn(serve(listener, admission, router, tls, shutdown));
    Ok(bound)
}

/// Whether `listen` is a loopback address (`127.0.0.1:7480`, `[::1]:7480`, `localhost:7480`).
fn is_loopback(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(address) => address.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host == "localhost"),
    }
}

impl Console {
    /// Whether a refusal may be logged now (`Some(n)`: `n` were left out since the last one).
    pub(crate) fn may_log_refusal(&self) -> Option<u64> {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(std::time::Instant::now())
    }
}

fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(pages::fleet))
        .route("/agents/{id}", get(pages::agent))
        .route("/models", get(pages::models))
        .route("/rollouts", get(pages::rollouts))
        .route("/rollouts/{id}", get(pages::rollout))
        .route("/rollouts/{id}/{action}", post(actions::control_rollout))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/compare", get(pages::compare))
        .route("/regressions", get(pages::regressions))
        .route(
            "/regressions/{id}/acknowledge",
            post(actions::acknowledge_regression),
        )
        .route("/schedules", get(pages::schedules))
        .route("/tokens", get(pages::tokens).post(actions::create_token))
        .route("/part/{*part}", get(live::part))
        .route("/events", get(live::events))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/assets/{name}", get(assets::asset))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            guard::headers,
        ))
        .with_state(console)
}

/// The console's TLS settings: the controller's server certificate (the one the link serves,
/// renewed the same way), no client certificate asked for, HTTP/2 or HTTP/1.1.
fn tls_config(
    authority: Arc<crate::trust::authority::Authority>,
) -> Result<Arc<rustls::ServerConfig>, ConsoleError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let identity = crate::server::tls::ServerIdentity::new(authority, provider.clone())
        .map_err(|e| ConsoleError::Tls(e.to_string()))?;
    let identity = Arc::new(identity);
    // The link's listener makes the next server certificate when this one nears its end; the
    // console serves whichever the authority holds, looked at hourly.
    let reloaded = Arc::downgrade(&identity);
    tokio::spawn(async move {
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        hourly.tick().await;
        loop {
            hourly.tick().await;
            let Some(identity) = reloaded.upgrade() else {
                return;
            };
            let _ = tokio::task::spawn_blocking(move || identity.reload()).await;
        }
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConsoleError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn serve(
    listener: TcpListener,
    admission: Arc<Admission>,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let limits = admission.limits().clone();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let stop = shutdown.clone();
    accept_loop(
        listener,
        admission,
        async move { stop.cancelled().await },
        move |guarded| {
            let router = router.clone();
            let acceptor = acceptor.clone();
            let limits = limits.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                // A request with a live session marks its connection authenticated: a page's
                // event stream may then stay open without the peer sending anything.
                let slot = ConnectionSlot(guarded.slot().clone());
                match acceptor {
                    Some(acceptor) => {
                        let Some(tls) =
                            crate::server::admission::accept_tls(guarded, &acceptor, &limits).await
                        else {
                            return;
                        };
                        serve_connection(tls, router, slot, shutdown).await;
                    }
                    None => {
                        let stream = crate::server::admission::for_unauthenticated(
                            guarded,
                            limits.unauthenticated_idle,
                        );
                        serve_connection(stream, router, slot, shutdown).await;
                    }
                }
            });
        },
    )
    .await;
}

/// The connection a request arrived on (its admission slot).
#[derive(Clone)]
pub(crate) struct ConnectionSlot(Arc<crate::server::admission::Slot>);

/// Serves one connection's requests with `router`, each carrying the connection's `slot`.
async fn serve_connection<IO>(
    io: IO,
    router: Router,
    slot: ConnectionSlot,
    shutdown: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper::service::Service;
    let app = hyper_util::service::TowerToHyperService::new(router);
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(slot.clone());
            app.call(request)
        });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let connection =
        builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
}
