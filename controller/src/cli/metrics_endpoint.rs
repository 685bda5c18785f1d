//! `serve --metrics-listen ADDR`: the Prometheus recorder for the process and a small HTTP/1.1
//! server for it: `GET /metrics` (the text exposition format, refreshed from the store first)
//! and `GET /healthz` (`ok`, for probes that cannot speak gRPC over TLS). Unauthenticated, so it
//! listens only where the operator says.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edgefleet_controller::server::admission::{
    accept_loop, for_plain_http, Admission, ConnectionLimits,
};
use edgefleet_controller::Controller;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often histograms' rolling windows are maintained.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder and binds `listen`; returns the address bound (port 0 picks one).
pub(crate) async fn start(
    listen: &str,
    controller: Controller,
    limits: &ConnectionLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    edgefleet_controller::metrics::describe();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))?;
    let bound = listener.local_addr()?;
    let upkeep = handle.clone();
    let stop_upkeep = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                _ = stop_upkeep.cancelled() => return,
            }
        }
    });
    // A scrape or a probe holds a connection or two: a few dozen at once is plenty.
    let admission = Admission::new(
        "metrics",
        ConnectionLimits {
            max_unauthenticated: limits.max_unauthenticated.min(64),
            max_unauthenticated_per_source: limits.max_unauthenticated_per_source.min(16),
            ..limits.clone()
        },
    );
    tokio::spawn(accept(listener, admission, handle, controller, shutdown));
    Ok(bound)
}

async fn accept(
    listener: TcpListener,
    admission: Arc<Admission>,
    handle: PrometheusHandle,
    controller: Controller,
    shutdown: CancellationToken,
) {
    let idle = admission.limits().unauthenticated_idle;
    let header_deadline = admission.limits().handshake_timeout;
    let stop = shutdown.clone();
    accept_loop(
        listener,
        admission,
        async move { stop.cancelled().await },
        move |guarded| {
            let handle = handle.clone();
            let controller = controller.clone();
            let stream = for_plain_http(guarded, idle);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let handle = handle.clone();
                    let controller = controller.clone();
                    async move { Ok::<_, Infallible>(answer(&request, &handle, &controller).await) }
                });
                // A request's head must arrive within the handshake deadline, so a slow
                // sender cannot hold a slot by trickling bytes that keep it from going idle.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_deadline)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        },
    )
    .await;
}

async fn answer<B>(
    request: &Request<B>,
    handle: &PrometheusHandle,
    controller: &Controller,
) -> Response<Full<Bytes>> {
    let (status, body) = match request.uri().path() {
        "/metrics" => {
            let (handle, controller) = (handle.clone(), controller.clone());
            // Counting rows and rendering take locks: off the async threads.
            let rendered = tokio::task::spawn_blocking(move || {
                edgefleet_controller::metrics::sample_store(&controller);
                handle.render()
            })
            .await
            .unwrap_or_default();
            (StatusCode::OK, Bytes::from(rendered))
        }
        "/healthz" => (StatusCode::OK, Bytes::from_static(b"ok\n")),
        _ => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"not found: try /metrics or /healthz\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
