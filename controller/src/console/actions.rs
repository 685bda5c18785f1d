//! What an operator does from the console: pause, resume, abort or roll back a rollout,
//! acknowledge a regression, create an enrollment token. Each is a POST checked by
//! [`super::guard::refuse_post`] (this origin, the session's CSRF token), carried out by the admin
//! service in-process (authorized there, as the API's calls are), and logged with the token
//! that made it.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use edgefleet_proto::v1::admin_server::Admin;
use edgefleet_proto::v1::{
    AcknowledgeRegressionRequest, ControlRolloutRequest, CreateEnrollmentTokenRequest,
};
use maud::html;

use super::pages::{call, refused, token_form};
use super::session::Viewer;
use super::{guard, layout, Console};

/// `POST /rollouts/ID/pause|resume|abort|rollback`.
pub(crate) async fn control_rollout(
    State(console): State<Console>,
    headers: HeaderMap,
    viewer: Viewer,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<guard::CsrfField>,
) -> Response {
    if let Some(refused) = guard::refuse_post(&console, &headers, &viewer, &form.csrf) {
        return refused;
    }
    if !matches!(action.as_str(), "pause" | "resume" | "abort" | "rollback") {
        return layout::error_page(StatusCode::NOT_FOUND, &format!("no action {action}"));
    }
    let request = call(
        &viewer,
        ControlRolloutRequest {
            rollout_id: id.clone(),
            action: action.clone(),
        },
    );
    match console.admin.control_rollout(request).await {
        Ok(_) => {
            tracing::info!(by = %viewer.name(), rollout = %id, %action, "console: rollout control");
            Redirect::to(&format!("/rollouts/{id}")).into_response()
        }
        Err(status) => {
            tracing::warn!(by = %viewer.name(), rollout = %id, %action, error = %status.message(), "console: rollout control refused");
            refused(status)
        }
    }
}

/// `POST /regressions/ID/acknowledge`.
pub(crate) async fn acknowledge_regression(
    State(console): State<Console>,
    headers: HeaderMap,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(form): Form<guard::CsrfField>,
) -> Response {
    if let Some(refused) = guard::refuse_post(&console, &headers, &viewer, &form.csrf) {
        return refused;
    }
    match console
        .admin
        .acknowledge_regression(call(&viewer, AcknowledgeRegressionRequest { id }))
        .await
    {
        Ok(_) => {
            tracing::info!(by = %viewer.name(), regression = id, "console: regression acknowledged");
            Redirect::to("/regressions").into_response()
        }
        Err(status) => {
            tracing::warn!(by = %viewer.name(), regression = id, error = %status.message(), "console: acknowledging refused");
            refused(status)
        }
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct TokenForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    ttl_hours: Option<u64>,
}

/// `POST /tokens`: a one-time enrollment token, shown once on the page this answers with.
pub(crate) async fn create_token(
    State(console): State<Console>,
    headers: HeaderMap,
    viewer: Viewer,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Some(refused) = guard::refuse_post(&console, &headers, &viewer, &form.csrf) {
        return refused;
    }
    let mut labels = std::collections::HashMap::new();
    for pair in form
        .labels
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                labels.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                return layout::error_page(
                    StatusCode::BAD_REQUEST,
                    &format!("label `{pair}` is not key=value"),
                )
            }
        }
    }
    let request = CreateEnrollmentTokenRequest {
        name: form.name.trim().to_string(),
        labels,
        ttl_s: form.ttl_hours.unwrap_or(1).saturating_mul(3600),
    };
    match console
        .admin
        .create_enrollment_token(call(&viewer, request))
        .await
    {
        Ok(reply) => {
            let reply = reply.into_inner();
            tracing::info!(by = %viewer.name(), device = %reply.name, "console: enrollment token created");
            let made = html! {
                div.notice role="status" {
                    p { "Enrollment token for " strong { (reply.name) } ", valid until " (layout::time(reply.expires_unix_ms)) ". Copy it now: it is not shown again." }
                    code.token { (reply.token) }
                }
            };
            let mut response =
                layout::page("Tokens", "Tokens", &viewer, token_form(&viewer, Some(made)));
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(status) => {
            tracing::warn!(by = %viewer.name(), error = %status.message(), "console: enrollment token refused");
            refused(status)
        }
    }
}
