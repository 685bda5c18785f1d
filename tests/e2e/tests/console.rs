//! The web console in a real browser: Debian's Chromium driven over WebDriver against a real
//! controller (`serve --console-listen`) with real agents. A rollout's page changes as devices
//! install, without a reload; an operator pauses a rollout from its page and the CLI sees it; a
//! viewer has no such button and a forged POST with their session is refused; a POST without
//! the CSRF token or from another origin is refused; a revoked token's session ends. Every page
//! is looked at 1400 and 390 px wide: no sideways scroll, no console error, no request to
//! another origin, every chart named; screenshots are kept for a person to look at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefleet_e2e::console_probe::sign_in_browser;
use edgefleet_e2e::replicas::start_replica;
use edgefleet_e2e::webdriver::{Driver, Session};
use edgefleet_e2e::{repo_root, start_agent, wait_until, Controller, StateIn};
use serde_json::{json, Value};

const SUITE: &str = r#"
name = "console"
models = ["minilm-l6@fp32", "minilm-l6@int8"]

[input]
text = ["The firmware update failed because the device ran out of disk space.", "Is the store open on Sunday?"]

[[scenario]]
kind = "single-stream"
threads = [1]
warmup = 5
min_queries = 60
min_duration_s = 1
max_duration_s = 5
"#;

/// Each test drives a browser and several processes: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where the screenshots go: kept after the test, for a person to look at.
fn screenshots() -> PathBuf {
    let dir = repo_root().join("target").join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// What a reader of the page would notice, measured in it.
const LOOK: &str = r#"
const doc = document.documentElement;
const origin = location.origin;
const charts = [...document.querySelectorAll('figure.chart svg')];
return {
  innerWidth: window.innerWidth,
  scrollWidth: doc.scrollWidth,
  charts: charts.length,
  unnamed: charts.filter(s => s.getAttribute('role') !== 'img' || !s.getAttribute('aria-label')).length,
  foreign: performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith(origin) && !n.startsWith('data:')),
  wide: [...document.body.querySelectorAll('*')]
    .filter(e => !e.closest('.scroll') && !e.closest('svg'))
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
    .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')).slice(0, 10),
  text: document.body.innerText.slice(0, 300),
};
"#;

/// Opens `path` at both widths, checks what a reader would notice, and keeps screenshots.
fn look_at(browser: &Session, console: &str, path: &str, name: &str, want: &str) -> usize {
    let mut charts = 0;
    for (width, height) in [(1400, 900), (390, 844)] {
        browser.resize(width, height);
        browser.open(&format!("{console}{path}"));
        browser.wait_for(
            &format!("{path} to show `{want}`"),
            Duration::from_secs(30),
            &format!(
                "return document.readyState === 'complete' && document.body.innerText.includes({})",
                json!(want)
            ),
        );
        let seen = browser.run(LOOK, json!([]));
        let shot = screenshots().join(format!("{name}-{width}.png"));
        browser.screenshot(&shot);
        assert!(
            seen["scrollWidth"].as_u64() <= seen["innerWidth"].as_u64(),
            "{path} at {width} px scrolls sideways ({} > {}); too wide: {}",
            seen["scrollWidth"],
            seen["innerWidth"],
            seen["wide"]
        );
        assert_eq!(seen["unnamed"], 0, "{path}: a chart without a name: {seen}");
        assert_eq!(
            seen["foreign"],
            json!([]),
            "{path}: requests to another origin"
        );
        let errors: Vec<String> = browser
            .console_log()
            .into_iter()
            .filter(|l| l.starts_with("SEVERE") || l.starts_with("WARNING"))
            .collect();
        assert!(
            errors.is_empty(),
            "{path} at {width} px: console says {errors:#?}"
        );
        charts = seen["charts"].as_u64().unwrap_or(0) as usize;
    }
    browser.resize(1400, 900);
    charts
}

/// A POST to the console made outside the browser, with the session cookie of `browser`.
fn post(
    http: &reqwest::blocking::Client,
    console: &str,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::StatusCode {
    let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut request = http
        .post(format!("{console}{path}"))
        .header("cookie", format!("__Host-edgefleet-session={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().expect("POST to the console").status()
}

fn http_client(ca: &Path) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(ca).expect("the controller's CA");
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTPS client")
}

/// Starts a rollout through `ctl`'s CLI: its id.
fn start_rollout(ctl: &Controller, model: &str) -> String {
    let said = ctl.cli_ok(&["rollout", "start", model, "--waves", "100%"]);
    said.split_whitespace()
        .find(|w| w.starts_with("ro-"))
        .unwrap_or_else(|| panic!("no rollout id in {said}"))
        .to_string()
}

fn wait_offline(ctl: &Controller, name: &str) {
    wait_until(
        &format!("{name} to be offline"),
        Duration::from_secs(60),
        || {
            ctl.agents()
                .iter()
                .any(|a| a["name"] == name && a["online"] == false)
        },
    );
}

/// Marks the open rollout page (the mark survives only if the page is never reloaded) and
/// notes when its state first reads `word`.
fn watch_rollout_state(browser: &Session, word: &str) {
    browser.run(
        "window.edgefleetMark = 'not reloaded';
         window.stateSeenAt = null;
         const word = arguments[0];
         new MutationObserver(() => {
           const s = document.querySelector('#rollout-state');
           if (!window.stateSeenAt && s && s.innerText.includes(word)) window.stateSeenAt = Date.now();
         }).observe(document.querySelector('#rollout'), {subtree: true, childList: true, characterData: true});",
        json!([word]),
    );
}

/// Waits until the watched state shows on the page, checks the page was not reloaded, and
/// returns how long after the store's update (the CLI's `updated_at`, same clock) it showed.
fn rollout_state_shown(browser: &Session, ctl: &Controller, rollout: &str, what: &str) -> Value {
    browser.wait_for(
        what,
        Duration::from_secs(180),
        "return !!window.stateSeenAt",
    );
    assert_eq!(
        browser.run("return window.edgefleetMark", json!([])),
        json!("not reloaded"),
        "the rollout's page was reloaded"
    );
    let updated = ctl.rollout(rollout)["updated_at"].clone();
    browser.run(
        "return window.stateSeenAt - Date.parse(arguments[0])",
        json!([updated]),
    )
}

fn csrf_of(browser: &Session) -> String {
    browser
        .run(
            "return document.querySelector('input[name=csrf]').value",
            json!([]),
        )
        .as_str()
        .expect("a CSRF field on the page")
        .to_string()
}

#[test]
fn the_console_shows_rollouts_live_and_lets_only_an_operator_act() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--console-listen", "127.0.0.1:0"],
    );
    let console = ctl.console_address();
    for quant in ["fp32", "int8"] {
        ctl.add_cached_model(
            &format!("models/minilm-l6/model.{quant}.onnx"),
            "minilm-l6",
            quant,
        );
    }
    let _a1 = start_agent(dir.path(), &ctl, "edge-a1", &["site=lab"]);
    let mut a2 = start_agent(dir.path(), &ctl, "edge-a2", &["site=lab"]);
    ctl.wait_online(&["edge-a1", "edge-a2"], Duration::from_secs(90));
    // A run with results, for the Runs and Compare pages' charts and verdicts.
    let suite = dir.path().join("console.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let run = ctl.cli_ok(&[
        "bench",
        "run",
        suite.to_str().unwrap(),
        "--select",
        "name=edge-a1",
        "--wait",
        "--json",
    ]);
    let records: Value = serde_json::from_str(&run).expect("the run's records as JSON");
    let run_id = records[0]["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run id in {records}"))
        .to_string();
    ctl.cli_ok(&[
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 0 3 * * *",
        "--suite",
        suite.to_str().unwrap(),
    ]);
    let viewer_token = ctl
        .cli_ok(&[
            "admin", "tokens", "create", "--name", "watcher", "--role", "viewer",
        ])
        .trim()
        .to_string();

    // edge-a2 goes away: the rollout installs on edge-a1 and waits for it.
    a2.terminate(Duration::from_secs(30));
    wait_offline(&ctl, "edge-a2");
    let rollout = start_rollout(&ctl, "minilm-l6@int8");

    let driver = Driver::start();
    let browser = driver.session(1400, 900);
    // Pages need a session; a token that is not this controller's gets none.
    browser.open(&format!("{console}/rollouts"));
    browser.wait_for(
        "the sign-in page in place of the rollouts",
        Duration::from_secs(30),
        "return location.pathname === '/sign-in' && !!document.querySelector('#token')",
    );
    browser.type_into("#token", "efa1.not-a-token");
    browser.click("main form button[type=submit]");
    browser.wait_for(
        "the sign-in page saying why",
        Duration::from_secs(30),
        "return document.body.innerText.includes('not an admin token')",
    );
    assert!(browser.cookie("__Host-edgefleet-session").is_none());
    let _ = browser.console_log(); // The refused sign-in's 401.
    sign_in_browser(&browser, &console, &ctl.operator_token());

    // The rollout's page, marked: the mark survives only if the page is never reloaded.
    browser.open(&format!("{console}/rollouts/{rollout}"));
    browser.wait_for(
        "edge-a1 installed on the rollout's page",
        Duration::from_secs(120),
        "return document.querySelector('#rollout').innerText.includes('edge-a1') && [...document.querySelectorAll('#rollout tr')].some(r => r.innerText.includes('edge-a1') && r.innerText.includes('installed'))",
    );
    watch_rollout_state(&browser, "succeeded");
    browser.screenshot(&screenshots().join("rollout-waiting-1400.png"));
    // edge-a2 comes back: it installs, and the page shows it and the rollout's end by itself.
    let _a2 = start_agent(dir.path(), &ctl, "edge-a2", &["site=lab"]);
    let delay = rollout_state_shown(
        &browser,
        &ctl,
        &rollout,
        "the rollout to succeed on the open page",
    );
    assert!(
        browser.text("#rollout").contains("edge-a2"),
        "edge-a2 on the page"
    );
    browser.screenshot(&screenshots().join("rollout-succeeded-1400.png"));
    // The figure: from the store's update to the page showing it (same machine, same clock).

    println!("figure: the rollout's end reached the open page {delay} ms after it was stored");

    // A second rollout waits for edge-a2 again; the operator pauses it from its page.
    let mut a2_again = _a2;
    a2_again.terminate(Duration::from_secs(30));
    wait_offline(&ctl, "edge-a2");
    let second = start_rollout(&ctl, "minilm-l6@fp32");
    browser.open(&format!("{console}/rollouts/{second}"));
    browser.wait_for(
        "a pause button on the running rollout's page",
        Duration::from_secs(30),
        "return !!document.querySelector('form[action$=\"/pause\"] button')",
    );
    browser.click("form[action$=\"/pause\"] button");
    browser.wait_for(
        "the rollout shown paused",
        Duration::from_secs(30),
        "return !!document.querySelector('#rollout-state') && document.querySelector('#rollout-state').innerText.includes('paused')",
    );
    assert_eq!(
        ctl.rollout(&second)["state"],
        "paused",
        "the CLI sees it paused"
    );
    assert!(
        ctl.process.log_text().contains("console: rollout control"),
        "the action is logged with who did it"
    );

    // Forged POSTs, with the operator's own session: no CSRF token, or another origin.
    let http = http_client(&ctl.data_dir.join("ca.pem"));
    let operator_cookie = browser
        .cookie("__Host-edgefleet-session")
        .expect("the session cookie");
    let csrf = csrf_of(&browser);
    let resume = format!("/rollouts/{second}/resume");
    assert_eq!(
        post(
            &http,
            &console,
            &resume,
            &operator_cookie,
            Some(&console),
            &[]
        ),
        reqwest::StatusCode::FORBIDDEN,
        "a POST without the CSRF token"
    );
    assert_eq!(
        post(
            &http,
            &console,
            &resume,
            &operator_cookie,
            Some("https://evil.example"),
            &[("csrf", &csrf)]
        ),
        reqwest::StatusCode::FORBIDDEN,
        "a POST from another origin"
    );
    assert_eq!(
        post(
            &http,
            &console,
            &resume,
            &operator_cookie,
            None,
            &[("csrf", &csrf)]
        ),
        reqwest::StatusCode::FORBIDDEN,
        "a POST with no origin"
    );
    assert_eq!(
        ctl.rollout(&second)["state"],
        "paused",
        "none of them resumed it"
    );

    // Every page, as the operator sees it.
    look_at(&browser, &console, "/", "fleet", "agents online");
    look_at(&browser, &console, "/?q=a2", "fleet-search", "edge-a2");
    let agent_id = ctl
        .agents()
        .iter()
        .find(|a| a["name"] == "edge-a1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    look_at(
        &browser,
        &console,
        &format!("/agents/{agent_id}"),
        "agent",
        "Hardware",
    );
    look_at(&browser, &console, "/models", "models", "minilm-l6@int8");
    look_at(&browser, &console, "/rollouts", "rollouts", &second);
    look_at(
        &browser,
        &console,
        &format!("/rollouts/{second}"),
        "rollout",
        "paused",
    );
    look_at(&browser, &console, "/runs", "runs", &run_id);
    let charts = look_at(
        &browser,
        &console,
        &format!("/runs/{run_id}"),
        "run",
        "Results",
    );
    assert!(charts > 0, "the run's page has the report's charts");
    look_at(
        &browser,
        &console,
        "/compare?a=minilm-l6%40fp32&b=minilm-l6%40int8",
        "compare",
        "Verdicts per device class",
    );
    look_at(
        &browser,
        &console,
        "/regressions",
        "regressions",
        "Regressions",
    );
    look_at(&browser, &console, "/schedules", "schedules", "nightly");
    look_at(&browser, &console, "/tokens", "tokens", "Create token");
    // An enrollment token, shown once.
    browser.open(&format!("{console}/tokens"));
    browser.type_into("input[name=name]", "edge-new");
    browser.click("form[action=\"/tokens\"] button");
    browser.wait_for(
        "the new token",
        Duration::from_secs(30),
        "return !!document.querySelector('code.token')",
    );
    let token = browser.text("code.token");
    assert!(token.starts_with("efe1."), "an enrollment token: {token}");

    // A viewer: the pages, no action, and a forged POST refused where the API refuses it.
    sign_in_browser(&browser, &console, &viewer_token);
    browser.open(&format!("{console}/rollouts/{second}"));
    browser.wait_for(
        "the rollout's page",
        Duration::from_secs(30),
        "return !!document.querySelector('#rollout-state')",
    );
    assert!(
        browser
            .find("form[action*=\"/rollouts/\"] button")
            .is_none(),
        "a viewer's rollout page has no action"
    );
    let forged = browser.run_async(
        "const done = arguments[arguments.length - 1];
         const body = new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value});
         fetch(arguments[0], {method: 'POST', body}).then(r => done(r.status), e => done(String(e)));",
        json!([resume]),
    );
    assert_eq!(forged, json!(403), "a viewer's forged resume");
    // The refusal is the one console error expected: the browser logs the 403.
    let said = browser.console_log();
    assert!(
        said.iter()
            .all(|l| l.contains("/resume") && l.contains("403")),
        "{said:#?}"
    );
    assert_eq!(ctl.rollout(&second)["state"], "paused");
    look_at(
        &browser,
        &console,
        "/tokens",
        "tokens-viewer",
        "viewer token cannot",
    );

    // The viewer's token is revoked: the session ends with it.
    ctl.cli_ok(&["admin", "tokens", "revoke", "watcher"]);
    browser.open(&format!("{console}/models"));
    browser.wait_for(
        "the sign-in page after the token was revoked",
        Duration::from_secs(30),
        "return location.pathname === '/sign-in'",
    );
    println!("screenshots: {}", screenshots().display());
}

/// Two controllers on one PostgreSQL database: a rollout paused through one reaches a console
/// open on the other without a reload (the first announces the change with NOTIFY).
#[test]
fn a_console_on_one_replica_shows_a_change_made_through_another() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let state = StateIn::postgres_and_s3();
    let console_flags = ["--console-listen", "127.0.0.1:0"];
    let r0 = start_replica(
        dir.path(),
        "r0",
        &state,
        None,
        "127.0.0.1:0",
        &console_flags,
    );
    let r1 = start_replica(
        dir.path(),
        "r1",
        &state,
        Some(&r0),
        "127.0.0.1:0",
        &console_flags,
    );
    r0.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm-l6", "int8");
    // An agent that was here and is away: the rollout waits for it, running.
    let mut away = start_agent(dir.path(), &r0, "edge-away", &[]);
    r0.wait_online(&["edge-away"], Duration::from_secs(90));
    away.terminate(Duration::from_secs(30));
    wait_offline(&r0, "edge-away");
    let rollout = start_rollout(&r0, "minilm-l6@int8");

    let console = r1.console_address();
    let driver = Driver::start();
    let browser = driver.session(1400, 900);
    sign_in_browser(&browser, &console, &r1.operator_token());
    browser.open(&format!("{console}/rollouts/{rollout}"));
    browser.wait_for(
        "the running rollout on r1's console, its live stream on",
        Duration::from_secs(60),
        "return !!document.querySelector('#rollout-state') && document.querySelector('#rollout-state').innerText.includes('running') && document.querySelector('.live-status').innerText.includes('Live updates: on')",
    );
    watch_rollout_state(&browser, "paused");
    // Paused through r0's admin API.
    r0.cli_ok(&["rollout", "pause", &rollout]);
    let delay = rollout_state_shown(
        &browser,
        &r0,
        &rollout,
        "r1's page to show the pause made through r0",
    );
    println!("figure: a pause through r0 reached r1's open page {delay} ms after it was stored");
    browser.screenshot(&screenshots().join("replica-rollout-paused-1400.png"));
}
