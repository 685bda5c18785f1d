//! The console's pages, each read through the admin service in-process ([`call`]) or, for
//! what the API does not list (an agent's jobs, the models each agent runs), from the store on
//! a blocking thread, after the viewer's session was checked. Live parts are rendered by the
//! `*_part` functions, which [`super::live`] sends again when they change.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use edgefleet_proto::v1::admin_server::Admin;
use edgefleet_proto::v1::{
    CompareRequest, GetRunRequest, ListModelsRequest, ListRegressionsRequest, ListRolloutsRequest,
    ListSchedulesRequest, Regression, RolloutStatus,
};
use maud::{html, Markup};

use super::layout::{self, bytes, empty, page, state, table, time};
use super::live::{self, Part};
use super::session::Viewer;
use super::Console;
use crate::compare::Comparison;
use crate::server::admin::ConsoleCaller;
use crate::store::{AgentModelRow, AgentRow};

/// Agents on one page of the fleet.
const FLEET_PAGE: usize = 100;
/// Devices listed on a rollout's page (the waves' counts cover them all).
const ROLLOUT_DEVICES_SHOWN: usize = 500;

/// A request to the admin service made for the signed-in viewer: authorized there exactly as
/// the viewer's token would be.
pub(crate) fn call<T>(viewer: &Viewer, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(ConsoleCaller {
        token_hash: viewer.session.token_hash.clone(),
    });
    request
}

/// The admin service's refusal as a page with the matching HTTP status.
pub(crate) fn refused(status: tonic::Status) -> Response {
    use tonic::Code;
    let code = match status.code() {
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    layout::error_page(code, status.message())
}

/// Runs store reads off the async threads; a store error becomes a page.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(layout::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &e.to_string(),
        )),
        Err(e) => Err(layout::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        )),
    }
}

macro_rules! ok_or_return {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(response) => return response,
        }
    };
}

pub(crate) async fn not_found() -> Response {
    layout::error_page(StatusCode::NOT_FOUND, "no such page")
}

// ----- Fleet -----

#[derive(serde::Deserialize, Default)]
pub(crate) struct FleetQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    select: String,
    #[serde(default)]
    page: usize,
}

/// The fleet's counts: enrolled, online, revoked, and per model how many agents run its
/// newest version of how many run any. Counted in the store, never a copy of every agent.
struct FleetCounts {
    total: u64,
    online: usize,
    /// Revoked agents, with when.
    revoked: BTreeMap<String, i64>,
    /// Model name → (newest registered version, agents on it, agents on any version).
    per_model: BTreeMap<String, (String, u64, u64)>,
}

async fn fleet_counts(console: &Console) -> Result<FleetCounts, Response> {
    let ctl = console.ctl.clone();
    blocking(move || {
        let mut newest: BTreeMap<String, (i64, String)> = BTreeMap::new();
        for m in ctl.store.models()? {
            let entry = newest
                .entry(m.name.clone())
                .or_insert((i64::MIN, String::new()));
            if m.created_ms >= entry.0 {
                *entry = (m.created_ms, m.version.clone());
            }
        }
        let mut per_model: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
        for (name, version, agents) in ctl.store.active_versions()? {
            let newest_version = newest
                .get(&name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let entry = per_model
                .entry(name)
                .or_insert_with(|| (newest_version.clone(), 0, 0));
            entry.2 += agents;
            if version == newest_version {
                entry.1 += agents;
            }
        }
        Ok(FleetCounts {
            total: ctl.store.agent_count()?,
            online: ctl.online_count(),
            revoked: ctl.store.revoked_agents()?,
            per_model,
        })
    })
    .await
}

fn fleet_summary(counts: &FleetCounts) -> Markup {
    let offline = (counts.total as usize).saturating_sub(counts.online);
    html! {
        div.cards {
            div.card { span.big { (counts.online) " / " (counts.total) } "agents online" }
            div.card { span.big { (offline) } "offline" }
            @if !counts.revoked.is_empty() { div.card { span.big { (counts.revoked.len()) } "revoked" } }
            @for (model, (newest, current, of)) in &counts.per_model {
                div.card {
                    span.big { (current) " / " (of) }
                    "up to date with " code { (model) "@" (newest) }
                }
            }
        }
    }
}

/// How long one rendering of the fleet's counts serves every page that asks.
const FLEET_SUMMARY_REUSED: std::time::Duration = std::time::Duration::from_millis(300);

pub(crate) async fn fleet_summary_part(console: &Console) -> Result<Markup, Response> {
    let recent = {
        let held = console
            .fleet_summary
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        held.as_ref()
            .filter(|(at, _)| at.elapsed() < FLEET_SUMMARY_REUSED)
            .map(|(_, html)| maud::PreEscaped(html.clone()))
    };
    if let Some(markup) = recent {
        return Ok(markup);
    }
    let markup = fleet_summary(&fleet_counts(console).await?);
    *console
        .fleet_summary
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), markup.0.clone()));
    Ok(markup)
}

/// One page of the fleet: its agents, and of those which are online and run what.
struct FleetPage {
    agents: Vec<AgentRow>,
    /// Agents that pass the filter, on every page.
    matching: usize,
    online: HashSet<String>,
    installed: HashMap<String, Vec<AgentModelRow>>,
}

async fn fleet_page(
    console: &Console,
    conditions: Vec<crate::selector::Condition>,
    needle: String,
    page: usize,
) -> Result<FleetPage, Response> {
    let ctl = console.ctl.clone();
    blocking(move || {
        let keep = |a: &AgentRow| {
            crate::planning::matches(a, &conditions)
                && (needle.is_empty()
                    || a.name.to_lowercase().contains(&needle)
                    || a.id.to_lowercase().contains(&needle))
        };
        let (mut agents, matching) = ctl.store.agents_page(keep, page * FLEET_PAGE, FLEET_PAGE)?;
        if agents.is_empty() && matching > 0 {
            // Past the last page: the last one.
            let last = (matching - 1) / FLEET_PAGE;
            agents = ctl
                .store
                .agents_page(keep, last * FLEET_PAGE, FLEET_PAGE)?
                .0;
        }
        let ids: HashSet<&str> = agents.iter().map(|a| a.id.as_str()).collect();
        let mut installed: HashMap<String, Vec<AgentModelRow>> = HashMap::new();
        for row in ctl.store.installed_of(&ids)? {
            installed.entry(row.agent_id.clone()).or_default().push(row);
        }
        Ok(FleetPage {
            online: ctl.online_among(ids.iter().copied()),
            installed,
            matching,
            agents,
        })
    })
    .await
}

pub(crate) async fn fleet(
    State(console): State<Console>,
    viewer: Viewer,
    Query(query): Query<FleetQuery>,
) -> Response {
    let counts = ok_or_return!(fleet_counts(&console).await);
    let conditions = match query.select.trim() {
        "" => Ok(Vec::new()),
        expr => crate::selector::parse_selector(expr),
    };
    let needle = query.q.trim().to_lowercase();
    let shown = match &conditions {
        Ok(conditions) => Some(ok_or_return!(
            fleet_page(&console, conditions.clone(), needle, query.page).await
        )),
        Err(_) => None,
    };
    let matching = shown.as_ref().map_or(0, |p| p.matching);
    let pages = matching.div_ceil(FLEET_PAGE).max(1);
    let page_no = query.page.min(pages - 1);
    let from = page_no * FLEET_PAGE;
    let link = |p: usize| {
        format!(
            "/?q={}&select={}&page={p}",
            form_encode(&query.q),
            form_encode(&query.select)
        )
    };
    let body = html! {
        h1 { "Fleet" }
        (live::region(&Part::FleetSummary, "fleet-summary", fleet_summary(&counts)))
        form.filters method="get" action="/" role="search" {
            label { "Search by name or id" input type="search" name="q" value=(query.q); }
            label { "Selector" input type="text" name="select" value=(query.select) placeholder="hw=rpi5,site!=lab"; }
            button type="submit" { "Filter" }
        }
        @if let Err(e) = &conditions {
            p.problem role="alert" { (e.to_string()) }
        }
        @if counts.total == 0 {
            (empty("No agents yet: enroll a device with a one-time token.", "edgefleet agents enroll --name NAME --label site=lab"))
        } @else if let Some(shown) = shown.as_ref().filter(|p| !p.agents.is_empty()) {
            p.muted { "Agents " (from + 1) "–" (from + shown.agents.len()) " of " (matching) }
            (table("Agents", &["Name", "State", "Last seen", "Site and labels", "Hardware class", "Active models"], html! {
                @for a in &shown.agents {
                    tr {
                        td { a href=(format!("/agents/{}", a.id)) { (a.name) } }
                        td {
                            @if counts.revoked.contains_key(&a.id) { (state("revoked")) }
                            @else if shown.online.contains(&a.id) { (state("online")) }
                            @else { (state("offline")) }
                        }
                        td { (time(a.last_seen_ms)) }
                        td { (labels_text(&a.labels)) }
                        td { code { (crate::planning::target_key(&a.hardware)) } }
                        td {
                            @for m in shown.installed.get(&a.id).into_iter().flatten().filter(|m| !m.active_version.is_empty()) {
                                code { (m.name) "@" (m.active_version) } " "
                            }
                        }
                    }
                }
            }))
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page_no > 0 { a href=(link(page_no - 1)) rel="prev" { "← Previous" } }
                    span { "Page " (page_no + 1) " of " (pages) }
                    @if page_no + 1 < pages { a href=(link(page_no + 1)) rel="next" { "Next →" } }
                }
            }
        } @else {
            p { "No agent matches. " a href="/" { "Show every agent" } }
        }
    };
    page("Fleet", "Fleet", &viewer, body)
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A query value as `application/x-www-form-urlencoded`.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

// ----- Agent -----

pub(crate) async fn agent(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let ctl = console.ctl.clone();
    let lookup = id.clone();
    let found = ok_or_return!(
        blocking(move || {
            let Some(agent) = ctl.store.agent(&lookup)? else {
                return Ok(None);
            };
            let installed = ctl.store.installed_of(&HashSet::from([lookup.as_str()]))?;
            let revoked = ctl.store.revoked_agents()?.get(&lookup).copied();
            let cert = ctl.store.agent_certificates()?.get(&lookup).copied();
            let jobs = ctl.store.agent_jobs(&lookup, 50)?;
            let online = ctl.is_online(&lookup);
            Ok(Some((agent, installed, revoked, cert, jobs, online)))
        })
        .await
    );
    let Some((agent, installed, revoked, cert, jobs, online)) = found else {
        return layout::error_page(StatusCode::NOT_FOUND, &format!("no agent {id}"));
    };
    let hw = &agent.hardware;
    let failures: Vec<_> = jobs
        .iter()
        .filter(|(j, _)| j.state == crate::store::JobState::Failed)
        .collect();
    let body = html! {
        p { a href="/" { "← Fleet" } }
        h1 { "Agent " (agent.name) }
        dl.facts {
            dt { "State" }
            dd {
                @if let Some(at) = revoked { (state("revoked")) " at " (time(at)) }
                @else if online { (state("online")) } @else { (state("offline")) }
            }
            dt { "Id" } dd { code { (agent.id) } }
            dt { "Labels" } dd { (labels_text(&agent.labels)) }
            dt { "Enrolled (first seen)" } dd { (time(agent.first_seen_ms)) }
            dt { "Last seen" } dd { (time(agent.last_seen_ms)) }
            dt { "Certificate valid until" } dd { (time(cert.unwrap_or(0))) }
            dt { "Agent version" } dd { (agent.agent_version) }
        }
        h2 { "Hardware" }
        dl.facts {
            dt { "Class" } dd { code { (crate::planning::target_key(hw)) } }
            dt { "CPU" } dd { (hw.cpu_model) " · " (hw.cpu_cores) " cores · " (hw.arch) }
            dt { "Memory" } dd { (bytes(hw.memory_bytes)) }
            dt { "OS" } dd { (hw.os) " · kernel " (hw.kernel) }
            dt { "Host name" } dd { (hw.hostname) }
            dt { "ONNX Runtime" } dd {
                @if hw.onnxruntime_version.is_empty() { span.problem { "not loaded: " (hw.runtime_error) } }
                @else { (hw.onnxruntime_version) " · " (hw.execution_providers.join(", ")) }
            }
        }
        h2 { "Models" }
        @if installed.is_empty() {
            (empty("Nothing installed yet.", "edgefleet rollout start NAME@VERSION --select name=AGENT"))
        } @else {
            (table("Installed models", &["Model", "Active version", "Versions on disk"], html! {
                @for m in &installed {
                    tr { td { (m.name) } td { code { (m.active_version) } } td { (m.versions.join(", ")) } }
                }
            }))
        }
        h2 { "Recent jobs" }
        @if jobs.is_empty() {
            (empty("No benchmark jobs yet.", "edgefleet bench run bench-suites/suites/quick.toml"))
        } @else {
            p.muted { (jobs.len()) " newest, " (failures.len()) " failed" }
            (table("Recent jobs", &["Run", "Started", "Model", "Scenario", "Threads", "State", "Error"], html! {
                @for (j, created) in &jobs {
                    tr {
                        td { a href=(format!("/runs/{}", j.run_id)) { code { (short(&j.run_id)) } } }
                        td { (time(*created)) }
                        td { (j.model_name) "@" (j.model_version) }
                        td { (j.scenario) }
                        td.num { (j.threads) }
                        td { (state(j.state.as_str())) }
                        td { (j.error.as_deref().unwrap_or("")) }
                    }
                }
            }))
        }
    };
    page(&format!("Agent {}", agent.name), "Fleet", &viewer, body)
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

// ----- Models -----

pub(crate) async fn models(State(console): State<Console>, viewer: Viewer) -> Response {
    let listed = match console
        .admin
        .list_models(call(&viewer, ListModelsRequest {}))
        .await
    {
        Ok(reply) => reply.into_inner().models,
        Err(status) => return refused(status),
    };
    let ctl = console.ctl.clone();
    let active: HashMap<(String, String), u64> =
        ok_or_return!(blocking(move || ctl.store.active_versions()).await)
            .into_iter()
            .map(|(name, version, agents)| ((name, version), agents))
            .collect();
    let body = html! {
        h1 { "Models" }
        @if listed.is_empty() {
            (empty("No models registered yet.", "edgefleet models add --name NAME --version VERSION --quant int8 model.onnx"))
        } @else {
            (table("Registered models", &["Model", "Quantization", "Size", "Inputs", "Outputs", "Registered", "Active on"], html! {
                @for m in &listed {
                    tr {
                        td { code { (m.name) "@" (m.version) } }
                        td { (m.quantization) }
                        td.num { (bytes(m.files.iter().map(|f| f.size_bytes).sum())) }
                        td { @for t in &m.inputs { code { (t.name) ": " (t.element_type) "[" (t.shape.join("×")) "]" } " " } }
                        td { @for t in &m.outputs { code { (t.name) ": " (t.element_type) "[" (t.shape.join("×")) "]" } " " } }
                        td { (time(m.created_unix_ms)) }
                        td.num { (active.get(&(m.name.clone(), m.version.clone())).copied().unwrap_or(0)) " agents" }
                    }
                }
            }))
        }
    };
    page("Models", "Models", &viewer, body)
}

// ----- Rollouts -----

async fn list_rollouts(
    console: &Console,
    viewer: &Viewer,
    rollout_id: &str,
) -> Result<Vec<RolloutStatus>, Response> {
    console
        .admin
        .list_rollouts(call(
            viewer,
            ListRolloutsRequest {
                rollout_id: rollout_id.to_string(),
            },
        ))
        .await
        .map(|r| r.into_inner().rollouts)
        .map_err(refused)
}

/// Devices with the version installed (healthy, or done with their wave).
fn done_of(r: &RolloutStatus) -> usize {
    r.targets
        .iter()
        .filter(|t| t.state == "done" || t.state == "installed")
        .count()
}

pub(crate) async fn rollouts_part(console: &Console, viewer: &Viewer) -> Result<Markup, Response> {
    let mut list = list_rollouts(console, viewer, "").await?;
    list.sort_by_key(|r| std::cmp::Reverse(r.created_unix_ms));
    Ok(html! {
        @if list.is_empty() {
            (empty("No rollouts yet.", "edgefleet rollout start NAME@VERSION --waves 10%,100% --select hw=rpi5"))
        } @else {
            (table("Rollouts", &["Rollout", "Model", "State", "Wave", "Devices installed", "Started", "Updated"], html! {
                @for r in &list {
                    tr {
                        td { a href=(format!("/rollouts/{}", r.rollout_id)) { code { (r.rollout_id) } } }
                        td { code { (r.model) } }
                        td { (state(&r.state)) @if !r.reason.is_empty() { " — " (r.reason) } }
                        td.num { (r.current_wave.saturating_add(1).min(wave_count(r) as u32)) " of " (wave_count(r)) }
                        td.num { (done_of(r)) " / " (r.targets.len()) }
                        td { (time(r.created_unix_ms)) }
                        td { (time(r.updated_unix_ms)) }
                    }
                }
            }))
        }
    })
}

fn wave_count(r: &RolloutStatus) -> usize {
    r.targets
        .iter()
        .map(|t| t.wave as usize + 1)
        .max()
        .unwrap_or(0)
}

pub(crate) async fn rollouts(State(console): State<Console>, viewer: Viewer) -> Response {
    let part = ok_or_return!(rollouts_part(&console, &viewer).await);
    let body = html! {
        h1 { "Rollouts" }
        (live::region(&Part::Rollouts, "rollouts", part))
    };
    page("Rollouts", "Rollouts", &viewer, body)
}

/// Which controls a rollout in this state offers.
fn controls_for(state: &str) -> &'static [(&'static str, &'static str)] {
    match state {
        "running" => &[
            ("pause", "Pause"),
            ("abort", "Abort"),
            ("rollback", "Roll back"),
        ],
        "paused" => &[
            ("resume", "Resume"),
            ("abort", "Abort"),
            ("rollback", "Roll back"),
        ],
        "rolled_back" => &[],
        _ => &[("rollback", "Roll back")],
    }
}

/// One rollout, as the admin API shows it.
async fn one_rollout(
    console: &Console,
    viewer: &Viewer,
    id: &str,
) -> Result<RolloutStatus, Response> {
    list_rollouts(console, viewer, id)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| layout::error_page(StatusCode::NOT_FOUND, &format!("no rollout {id}")))
}

pub(crate) async fn rollout_part(
    console: &Console,
    viewer: &Viewer,
    id: &str,
) -> Result<Markup, Response> {
    let r = one_rollout(console, viewer, id).await?;
    rollout_markup(console, viewer, &r).await
}

/// A rollout's live part: its state, controls, waves, gate, devices and timeline.
async fn rollout_markup(
    console: &Console,
    viewer: &Viewer,
    r: &RolloutStatus,
) -> Result<Markup, Response> {
    let ctl = console.ctl.clone();
    let rid = r.rollout_id.clone();
    let events = blocking(move || ctl.store.events(&rid)).await?;
    let waves = wave_count(r);
    let mut per_wave: Vec<BTreeMap<&str, usize>> = vec![BTreeMap::new(); waves];
    for t in &r.targets {
        *per_wave[t.wave as usize]
            .entry(t.state.as_str())
            .or_default() += 1;
    }
    let failed_devices = r.targets.iter().filter(|t| t.state == "failed").count();
    // Failures first, then by wave and name.
    let mut targets: Vec<_> = r.targets.iter().collect();
    targets.sort_by_key(|t| (t.state != "failed", t.wave, t.agent_name.clone()));
    let names: HashMap<&str, &str> = r
        .targets
        .iter()
        .map(|t| (t.agent_id.as_str(), t.agent_name.as_str()))
        .collect();
    Ok(html! {
        dl.facts {
            dt { "State" } dd #rollout-state { (state(&r.state)) @if !r.reason.is_empty() { " — " (r.reason) } }
            dt { "Wave" } dd { (r.current_wave.saturating_add(1).min(waves as u32)) " of " (waves) " (" (r.waves) ")" }
            dt { "Devices installed" } dd { (done_of(r)) " of " (r.targets.len()) }
            dt { "Success threshold" } dd { (r.success) }
            dt { "Abort after" } dd { @if r.abort_after.is_empty() { "not set" } @else { (r.abort_after) } }
            dt { "Gate" } dd { @if r.gate.is_empty() { "none" } @else { (r.gate) } }
            dt { "Updated" } dd { (time(r.updated_unix_ms)) }
        }
        @if failed_devices > 0 {
            p.banner role="status" { (failed_devices) " device(s) failed their install; see the devices below." }
        }
        @if viewer.is_operator() && !controls_for(&r.state).is_empty() {
            div.actions {
                @for (action, label) in controls_for(&r.state) {
                    @let confirm = (*action == "abort" || *action == "rollback").then(|| format!("{label} rollout {}?", r.rollout_id));
                    form.inline method="post" action=(format!("/rollouts/{}/{action}", r.rollout_id)) data-confirm=[confirm] {
                        (layout::csrf(viewer))
                        button type="submit" class=[(*action != "pause" && *action != "resume").then_some("danger")] { (label) }
                    }
                }
            }
        }
        h2 { "Waves" }
        (table("Waves", &["Wave", "Devices", "By state"], html! {
            @for (i, counts) in per_wave.iter().enumerate() {
                tr {
                    td { (i + 1) @if i as u32 == r.current_wave && (r.state == "running" || r.state == "paused") { " (current)" } }
                    td.num { (counts.values().sum::<usize>()) }
                    td { @for (s, n) in counts { (state(s)) " " (n) "  " } }
                }
            }
        }))
        @if !r.gates.is_empty() || !r.gate_notes.is_empty() {
            h2 { "Performance gate" }
            @for note in &r.gate_notes { p.muted { (note) } }
            (table("Gate measurements against their limits", &["Wave", "Device", "Metric", "Measured", "Limit", "Outcome", "Decision"], html! {
                @for g in &r.gates {
                    @if g.measurements.is_empty() {
                        tr { td.num { (g.wave + 1) } td { (g.agent_name) } td colspan="4" { (g.error) } td { (state(if g.passed { "passed" } else { "failed" })) } }
                    }
                    @for m in &g.measurements {
                        tr {
                            td.num { (g.wave + 1) }
                            td { (g.agent_name) }
                            td { (m.metric) }
                            td.num { (m.value.map_or("not measured".to_string(), |v| format!("{v:.3}"))) }
                            td.num { (m.comparison) " " (format!("{:.3}", m.limit)) }
                            td { (state(&m.outcome)) @if !m.detail.is_empty() { " " span.muted { (m.detail) } } }
                            td { (state(if g.passed { "passed" } else { "failed" })) }
                        }
                    }
                }
            }))
        }
        h2 { "Devices" }
        @if r.targets.len() > ROLLOUT_DEVICES_SHOWN {
            p.muted { "The first " (ROLLOUT_DEVICES_SHOWN) " of " (r.targets.len()) " devices, failures first." }
        }
        (table("Devices", &["Device", "Wave", "State", "Connection", "Previous version", "Health", "Fetched", "Error"], html! {
            @for t in targets.iter().take(ROLLOUT_DEVICES_SHOWN) {
                tr {
                    td { a href=(format!("/agents/{}", t.agent_id)) { (t.agent_name) } }
                    td.num { (t.wave + 1) }
                    td { (state(&t.state)) }
                    td { (state(if t.online { "online" } else { "offline" })) }
                    td { @if t.previous_version.is_empty() { span.muted { "none" } } @else { code { (t.previous_version) } } }
                    td { (t.health) }
                    td.num { (bytes(t.fetched_bytes.max(t.served_bytes))) }
                    td { (t.error) }
                }
            }
        }))
        h2 { "Timeline" }
        (table("Timeline", &["When", "Device", "What happened"], html! {
            @for e in events.iter().rev() {
                tr {
                    td { (time(e.at_ms)) }
                    td { (e.agent_id.as_deref().map(|id| names.get(id).copied().unwrap_or(id)).unwrap_or("")) }
                    td { (e.message) }
                }
            }
        }))
    })
}

pub(crate) async fn rollout(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let r = ok_or_return!(one_rollout(&console, &viewer, &id).await);
    let part = ok_or_return!(rollout_markup(&console, &viewer, &r).await);
    let body = html! {
        p { a href="/rollouts" { "← Rollouts" } }
        h1 { "Rollout " code { (id) } " of " code { (r.model) } }
        (live::region(&Part::Rollout(id.clone()), "rollout", part))
    };
    page(&format!("Rollout {id}"), "Rollouts", &viewer, body)
}

// ----- Runs -----

pub(crate) async fn runs(State(console): State<Console>, viewer: Viewer) -> Response {
    let ctl = console.ctl.clone();
    let list = ok_or_return!(blocking(move || ctl.store.recent_runs(200)).await);
    let body = html! {
        h1 { "Runs" }
        @if list.is_empty() {
            (empty("No benchmark runs yet.", "edgefleet bench run bench-suites/suites/quick.toml --wait"))
        } @else {
            (table("The newest runs", &["Run", "Suite", "Started", "Started by"], html! {
                @for r in &list {
                    tr {
                        td { a href=(format!("/runs/{}", r.id)) { code { (r.id) } } }
                        td { (r.suite) }
                        td { (time(r.created_ms)) }
                        td { @if let Some(s) = &r.schedule { "schedule " (s) } @else { "bench run or a rollout's gate" } }
                    }
                }
            }))
        }
    };
    page("Runs", "Runs", &viewer, body)
}

pub(crate) async fn run(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let status = match console
        .admin
        .get_run(call(&viewer, GetRunRequest { run_id: id.clone() }))
        .await
    {
        Ok(reply) => reply.into_inner(),
        Err(status) => return refused(status),
    };
    let ctl = console.ctl.clone();
    let run_id = id.clone();
    let (records, _failures) =
        ok_or_return!(blocking(move || crate::records::collect(&ctl.store, Some(&run_id))).await);
    let charts = super::charts::of_records(&records);
    let body = html! {
        p { a href="/runs" { "← Runs" } }
        h1 { "Run " code { (id) } }
        dl.facts {
            dt { "Suite" } dd { (status.suite) }
            dt { "Jobs" } dd { (status.jobs_done) " done, " (status.jobs_failed) " failed, of " (status.jobs_total) }
            dt { "Judged for regressions" } dd { (if status.judged { "yes" } else { "not yet" }) }
        }
        @for chart in &charts { (chart) }
        h2 { "Results" }
        @if records.is_empty() {
            (empty("No results stored yet: the run's jobs are below.", "edgefleet report --run RUN_ID"))
        } @else {
            (table("Results", &["Agent", "Model", "Scenario", "Threads", "p50 ms", "p90 ms", "p99 ms", "Throughput /s", "Peak memory"], html! {
                @for r in &records {
                    tr {
                        td { (r.agent) }
                        td { code { (r.model) "@" (r.model_version) } }
                        td { (r.scenario) }
                        td.num { (r.threads) }
                        td.num { (format!("{:.2}", r.latency_ms.p50)) }
                        td.num { (format!("{:.2}", r.latency_ms.p90)) }
                        td.num { (format!("{:.2}", r.latency_ms.p99)) }
                        td.num { (format!("{:.1}", r.throughput_per_s)) }
                        td.num { (bytes(r.peak_rss_bytes)) }
                    }
                }
            }))
        }
        h2 { "Jobs" }
        (table("Jobs", &["Agent", "Model", "Scenario", "Threads", "State", "Error"], html! {
            @for j in &status.jobs {
                tr { td { (j.agent_name) } td { code { (j.model) } } td { (j.scenario) } td.num { (j.threads) } td { (state(&j.state)) } td { (j.error) } }
            }
        }))
    };
    page(&format!("Run {id}"), "Runs", &viewer, body)
}

// ----- Compare -----

#[derive(serde::Deserialize, Default)]
pub(crate) struct CompareQuery {
    #[serde(default)]
    a: String,
    #[serde(default)]
    b: String,
    #[serde(default)]
    metric: String,
}

pub(crate) async fn compare(
    State(console): State<Console>,
    viewer: Viewer,
    Query(query): Query<CompareQuery>,
) -> Response {
    let asked = !query.a.trim().is_empty() && !query.b.trim().is_empty();
    let outcome: Option<Result<Comparison, String>> = if asked {
        let request = CompareRequest {
            a: query.a.trim().to_string(),
            b: query.b.trim().to_string(),
            metric: query.metric.trim().to_string(),
            ..CompareRequest::default()
        };
        Some(match console.admin.compare(call(&viewer, request)).await {
            Ok(reply) => serde_json::from_str(&reply.into_inner().comparison_json)
                .map_err(|e| format!("cannot read the comparison: {e}")),
            Err(status) => Err(status.message().to_string()),
        })
    } else {
        None
    };
    // The registered versions and the newest runs, offered as the inputs are typed.
    let ctl = console.ctl.clone();
    let (models, runs) = ok_or_return!(
        blocking(move || Ok((ctl.store.models()?, ctl.store.recent_runs(20)?))).await
    );
    let body = html! {
        h1 { "Compare" }
        datalist #sides {
            @for m in &models { option value=(format!("{}@{}", m.name, m.version)) {} }
            @for r in &runs { option value=(r.id) { (r.suite) } }
        }
        form.stack method="get" action="/compare" {
            label { "A (baseline): model@version or a run id" input type="text" name="a" list="sides" value=(query.a) required; }
            label { "B (candidate)" input type="text" name="b" list="sides" value=(query.b) required; }
            label { "Metric"
                select name="metric" {
                    option value="" selected[query.metric.is_empty()] { "default (p50 latency)" }
                    @for metric in crate::compare::Metric::ALL {
                        option value=(metric.name()) selected[query.metric == metric.name()] { (metric.name()) " (" (metric.unit()) ")" }
                    }
                }
            }
            button type="submit" { "Compare" }
        }
        @match &outcome {
            None => p.muted { "Pick two model versions (e.g. " code { "minilm@fp32" } " and " code { "minilm@int8" } ") or two runs; verdicts come per device class, with 95% intervals, as " code { "edgefleet compare A B" } " prints them." },
            Some(Err(e)) => p.problem role="alert" { (e) },
            Some(Ok(c)) => {
                p { "B against A on " (c.metric.name()) " (" (c.unit) "), threshold " (format!("{:.0}%", c.threshold * 100.0)) "." }
                @if c.rows.is_empty() {
                    (empty("Neither side has results to compare.", "edgefleet bench run SUITE.toml --wait"))
                } @else {
                    (table("Verdicts per device class", &["Device class", "Scenario", "A", "B", "B / A", "95% interval", "Verdict"], html! {
                        @for row in &c.rows {
                            tr {
                                td { code { (row.device_class) } }
                                td { (row.scenario) }
                                td.num { (side_value(row.a.as_ref())) }
                                td.num { (side_value(row.b.as_ref())) }
                                td.num { (row.ratio.map_or("—".into(), |r| format!("{r:.3}"))) }
                                td.num { (row.ci95.map_or("—".into(), |[lo, hi]| format!("{lo:.3} – {hi:.3}"))) }
                                td { (state(&row.verdict_text)) }
                            }
                        }
                    }))
                }
            }
        }
    };
    page("Compare", "Compare", &viewer, body)
}

fn side_value(side: Option<&crate::compare::Side>) -> String {
    match side {
        None => "not measured".into(),
        Some(s) => s
            .value
            .map_or("—".into(), |v| format!("{v:.3} ({} samples)", s.samples)),
    }
}

// ----- Regressions -----

pub(crate) async fn regressions_part(
    console: &Console,
    viewer: &Viewer,
) -> Result<Markup, Response> {
    let mut list: Vec<Regression> = console
        .admin
        .list_regressions(call(viewer, ListRegressionsRequest { since_unix_ms: 0 }))
        .await
        .map_err(refused)?
        .into_inner()
        .regressions;
    // Open ones first, newest first.
    list.sort_by_key(|r| (r.acknowledged_at_unix_ms != 0, -r.detected_at_unix_ms));
    Ok(html! {
        @if list.is_empty() {
            (empty("No regressions found. Runs are judged when they finish, against a baseline or their recent history.", "edgefleet baseline set SUITE"))
        } @else {
            (table("Regressions, open first", &["Found", "Model", "Scenario", "Device class", "Metric", "Change", "Against", "State", ""], html! {
                @for r in &list {
                    tr {
                        td { (time(r.detected_at_unix_ms)) }
                        td { code { (r.model) } }
                        td { (r.scenario) }
                        td { code { (r.device_class) } }
                        td { (r.metric) }
                        td.num {
                            (format!("×{:.3}", r.ratio))
                            @if let (Some(lo), Some(hi)) = (r.ci_low, r.ci_high) { " [" (format!("{lo:.3} – {hi:.3}")) "]" }
                            @if let Some(z) = r.robust_z { " z=" (format!("{z:.1}")) }
                        }
                        td { (r.against) " " a href=(format!("/runs/{}", r.run_id)) { "run" } }
                        td { @if r.acknowledged_at_unix_ms != 0 { (state("acknowledged")) } @else { (state("open")) } }
                        td {
                            @if r.acknowledged_at_unix_ms == 0 && viewer.is_operator() {
                                form.inline method="post" action=(format!("/regressions/{}/acknowledge", r.id)) {
                                    (layout::csrf(viewer))
                                    button type="submit" { "Acknowledge" }
                                }
                            }
                        }
                    }
                }
            }))
        }
    })
}

pub(crate) async fn regressions(State(console): State<Console>, viewer: Viewer) -> Response {
    let part = ok_or_return!(regressions_part(&console, &viewer).await);
    let body = html! {
        h1 { "Regressions" }
        (live::region(&Part::Regressions, "regressions", part))
    };
    page("Regressions", "Regressions", &viewer, body)
}

// ----- Schedules -----

pub(crate) async fn schedules(State(console): State<Console>, viewer: Viewer) -> Response {
    let list = match console
        .admin
        .list_schedules(call(&viewer, ListSchedulesRequest {}))
        .await
    {
        Ok(reply) => reply.into_inner().schedules,
        Err(status) => return refused(status),
    };
    let body = html! {
        h1 { "Schedules" }
        @if list.is_empty() {
            (empty("No scheduled runs.", "edgefleet schedule add nightly --cron '0 0 2 * * *' --suite bench-suites/suites/quick.toml"))
        } @else {
            (table("Scheduled runs", &["Name", "When", "Suite", "Agents", "Next fire", "Last fire", "Missed"], html! {
                @for s in &list {
                    tr {
                        td { (s.name) }
                        td { code { (s.cron) } " " (s.timezone) @if s.when_idle { " · when idle" } }
                        td { (s.suite) }
                        td { @if s.select.is_empty() { "every agent" } @else { code { (s.select) } } }
                        td { (time(s.next_fire_unix_ms)) }
                        td {
                            @if let Some(f) = &s.last_fire {
                                (time(f.planned_unix_ms)) " " (state(&f.outcome))
                                @if !f.run_id.is_empty() { " " a href=(format!("/runs/{}", f.run_id)) { "run" } }
                                @if !f.reason.is_empty() { " " span.muted { (f.reason) } }
                            } @else { span.muted { "not yet" } }
                        }
                        td.num { (s.missed) }
                    }
                }
            }))
        }
    };
    page("Schedules", "Schedules", &viewer, body)
}

// ----- Tokens -----

pub(crate) async fn tokens(State(_console): State<Console>, viewer: Viewer) -> Response {
    page("Tokens", "Tokens", &viewer, token_form(&viewer, None))
}

/// The enrollment-token form, and a token just made (shown once).
pub(crate) fn token_form(viewer: &Viewer, made: Option<Markup>) -> Markup {
    html! {
        h1 { "Enrollment tokens" }
        @if let Some(made) = made { (made) }
        @if viewer.is_operator() {
            p { "A one-time token enrolls one device: " code { "edgefleet-agent enroll --controller https://HOST:PORT --enroll-token TOKEN" } ". It is shown once, here." }
            form.stack method="post" action="/tokens" {
                (layout::csrf(viewer))
                label { "Device name" input type="text" name="name" required placeholder="pi-kitchen-01"; }
                label { "Labels" input type="text" name="labels" placeholder="site=lab,hw=rpi5"; }
                label { "Valid for (hours)" input type="number" name="ttl_hours" value="1" min="1" max="8760"; }
                button type="submit" { "Create token" }
            }
        } @else {
            p { "A viewer token cannot create enrollment tokens; sign in with an operator token, or run " code { "edgefleet agents enroll --name NAME" } "." }
        }
    }
}
