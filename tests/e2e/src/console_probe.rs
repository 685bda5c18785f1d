//! The web console's figures with a large fleet (`fleet_sim --console`): the Fleet page's time
//! on the server (a full HTTPS request, 20 in a row), the time until it is usable in Chromium
//! (its navigation timing, 5 loads), and how much the controller's memory grows with ten pages
//! open, each a signed-in session holding its live-update stream.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::webdriver::{Driver, Session};

/// What was measured.
pub struct ConsoleFigures {
    /// Milliseconds per `GET /` (the Fleet page), in request order.
    pub page_ms: Vec<f64>,
    pub page_bytes: usize,
    /// Per browser load: response end, DOMContentLoaded end (the script has run: usable), load
    /// end, in ms from navigation start.
    pub browser_ms: Vec<[f64; 3]>,
    /// Controller RSS before signing in, and with ten pages open.
    pub rss_before: u64,
    pub rss_with_pages: u64,
    /// Pages whose live stream delivered its first update.
    pub live_streams: usize,
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn client(ca_pem: &str) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTPS client")
}

/// Signs in with `token`: the session cookie's value.
pub fn sign_in(http: &reqwest::blocking::Client, console: &str, token: &str) -> String {
    let body = format!("token={}&next=%2F", token.replace('+', "%2B"));
    let response = http
        .post(format!("{console}/sign-in"))
        .header("origin", console)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .expect("sign in");
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.split_once('='))
        .map(|(_, id)| id.to_string());
    cookie.unwrap_or_else(|| panic!("no session from signing in: {}", response.status()))
}

/// Signs `browser` in to the console at `console` with `token` (through its form, as a person
/// does) and waits for the Fleet page it lands on.
pub fn sign_in_browser(browser: &Session, console: &str, token: &str) {
    browser.delete_cookies();
    browser.open(&format!("{console}/sign-in"));
    browser.type_into("#token", token);
    browser.click("main form button[type=submit]");
    browser.wait_for(
        "the fleet page after signing in",
        Duration::from_secs(60),
        "return location.pathname === '/' && !!document.querySelector('h1') && document.querySelector('h1').innerText === 'Fleet'",
    );
}

/// Measures the console at `console` (its CA `ca_pem`) of the controller `pid`.
pub fn measure(console: &str, ca_pem: &str, token: &str, pid: u32) -> ConsoleFigures {
    let http = client(ca_pem);
    let rss_before = rss_bytes(pid);
    let cookie = sign_in(&http, console, token);
    let get = |path: &str, cookie: &str| {
        http.get(format!("{console}{path}"))
            .header("cookie", format!("__Host-edgefleet-session={cookie}"))
            .send()
            .expect("GET")
    };
    let mut page_ms = Vec::new();
    let mut page_bytes = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let response = get("/", &cookie);
        assert!(
            response.status().is_success(),
            "GET /: {}",
            response.status()
        );
        page_bytes = response.bytes().expect("the page").len();
        page_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }

    // Ten open pages: ten sessions, each with its page loaded and its live stream held.
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut holders = Vec::new();
    for _ in 0..9 {
        let cookie = sign_in(&http, console, token);
        assert!(get("/", &cookie).status().is_success());
        let mut stream = get("/events?part=%2Fpart%2Ffleet-summary", &cookie);
        let (stop, delivered) = (stop.clone(), delivered.clone());
        holders.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut counted = false;
            while !stop.load(Ordering::Relaxed) {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if !counted && buf[..n].windows(12).any(|w| w == b"event: updat") {
                            counted = true;
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    // The tenth in Chromium, which also times the page until usable.
    let driver = Driver::start();
    let browser = driver.session(1400, 900);
    sign_in_browser(&browser, console, token);
    let mut browser_ms = Vec::new();
    for _ in 0..5 {
        browser.open(&format!("{console}/"));
        browser.wait_for(
            "the Fleet page loaded",
            Duration::from_secs(60),
            "const n = performance.getEntriesByType('navigation')[0]; return !!n && n.loadEventEnd > 0",
        );
        let t = browser.run(
            "const n = performance.getEntriesByType('navigation')[0]; \
             return [n.responseEnd - n.startTime, n.domContentLoadedEventEnd - n.startTime, n.loadEventEnd - n.startTime];",
            json!([]),
        );
        let at = |i: usize| t[i].as_f64().unwrap_or(f64::NAN);
        browser_ms.push([at(0), at(1), at(2)]);
    }
    browser.wait_for(
        "the browser's live stream",
        Duration::from_secs(60),
        "return document.querySelector('.live-status').innerText.includes('Live updates: on')",
    );
    crate::wait_until(
        "the nine streams' first updates",
        Duration::from_secs(60),
        || delivered.load(Ordering::Relaxed) >= 9,
    );
    // Settled: what ten open pages hold.
    std::thread::sleep(Duration::from_secs(3));
    let rss_with_pages = rss_bytes(pid);
    let live_streams = delivered.load(Ordering::Relaxed) + 1;
    stop.store(true, Ordering::Relaxed);
    drop(browser);
    drop(driver);
    ConsoleFigures {
        page_ms,
        page_bytes,
        browser_ms,
        rss_before,
        rss_with_pages,
        live_streams,
    }
}

/// The median of `values`.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The CA of the controller whose data folder is `data_dir`.
pub fn ca_of(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("ca.pem")).expect("the controller's CA")
}
