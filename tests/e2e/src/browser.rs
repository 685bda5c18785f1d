//! Looks at an HTML report as a person would: Debian's headless Chromium opens it at 1400 × 900,
//! saves screenshots, and a script appended to a copy of the page measures what a reader would
//! notice (charts missing or blank, words broken across lines, cells cut off, a page wider
//! than the window, console errors, anything loaded from outside the file).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The window a new user on a laptop has.
pub const WIDTH: u32 = 1400;
pub const HEIGHT: u32 = 900;
/// The tallest full-page screenshot taken.
const MAX_FULL_HEIGHT: u64 = 16_000;

/// Runs in the page before anything else: records errors, and once the page has loaded writes
/// its measurements as JSON into `<pre id="edgefleet-verdict">`.
const PROBE: &str = r#"<script>(function(){
const errors=[];
window.addEventListener('error',e=>errors.push('error: '+e.message));
const ce=console.error.bind(console);
console.error=(...a)=>{errors.push('console.error: '+a.join(' '));ce(...a);};
window.addEventListener('load',()=>{
 const charts=[...document.querySelectorAll('figure.chart')].map(f=>{
  const svg=f.querySelector('svg');
  const b=svg?svg.getBoundingClientRect():{width:0,height:0};
  const drawn=svg?svg.querySelectorAll('rect,path,polyline,polygon,line,circle,text').length:0;
  return {id:f.id,kind:f.dataset.chart||'',width:b.width,height:b.height,drawn};
 });
 const broken=[];
 const walker=document.createTreeWalker(document.body,NodeFilter.SHOW_TEXT);
 const range=document.createRange();
 let node;
 while((node=walker.nextNode())){
  if(node.parentElement.closest('svg,script,style,pre#edgefleet-verdict'))continue;
  const words=/\S+/g;let m;
  while((m=words.exec(node.data))){
   range.setStart(node,m.index);range.setEnd(node,m.index+m[0].length);
   const tops=new Set([...range.getClientRects()].filter(r=>r.width>0).map(r=>Math.round(r.top)));
   if(tops.size>1)broken.push(m[0]);
  }
 }
 const cut=[...document.querySelectorAll('td,th')].filter(c=>c.scrollWidth>c.clientWidth+1)
  .map(c=>c.textContent.trim().slice(0,60));
 const wide=[...document.body.querySelectorAll('*')]
  .filter(e=>!e.closest('.scroll')&&!e.closest('svg'))
  .filter(e=>e.getBoundingClientRect().right>window.innerWidth+1)
  .map(e=>e.tagName.toLowerCase()+(e.className?'.'+e.className:''));
 const doc=document.documentElement;
 const verdict={innerWidth:window.innerWidth,scrollWidth:doc.scrollWidth,height:doc.scrollHeight,
  charts,broken,cut,wide,errors,
  resources:performance.getEntriesByType('resource').map(r=>r.name),
  text:document.body.innerText.slice(0,4000)};
 const pre=document.createElement('pre');pre.id='edgefleet-verdict';
 pre.textContent=JSON.stringify(verdict);document.body.appendChild(pre);
});
})();</script>"#;

/// One chart as the browser laid it out.
#[derive(Debug, Clone)]
pub struct ChartSeen {
    pub id: String,
    pub kind: String,
    pub width: f64,
    pub height: f64,
    /// Shapes and text elements in its `<svg>`.
    pub drawn: u64,
}

/// What Chromium saw.
#[derive(Debug, Clone)]
pub struct BrowserCheck {
    /// The first screen, 1400 × 900.
    pub screenshot: PathBuf,
    /// The whole page at 1400 px wide (up to 16,000 px tall).
    pub full_screenshot: PathBuf,
    /// `<figure class="chart">` elements in the HTML file.
    pub charts_in_file: usize,
    pub charts: Vec<ChartSeen>,
    pub page_height: f64,
    /// The start of the page's visible text.
    pub text: String,
    /// Everything a reader would notice, one line each; empty when the page reads well.
    pub problems: Vec<String>,
}

impl BrowserCheck {
    /// Panics with every problem found and the screenshots' paths.
    pub fn assert_ok(&self) {
        assert!(
            self.problems.is_empty(),
            "the report does not read well in Chromium at {WIDTH} px:\n- {}\nscreenshots: {} and {}",
            self.problems.join("\n- "),
            self.screenshot.display(),
            self.full_screenshot.display()
        );
    }

    /// The kinds of chart seen (`pareto`, `heatmap`, ...), each once.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.charts.iter().map(|c| c.kind.clone()).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// Opens `html` in headless Chromium, saves `screen.png` and `full.png` under `out`, and
/// measures the page. Panics when Chromium is missing or fails; problems with the page itself
/// are collected in [`BrowserCheck::problems`].
pub fn check_report(html: &Path, out: &Path) -> BrowserCheck {
    std::fs::create_dir_all(out).expect("screenshot folder");
    let page = std::fs::read_to_string(html).expect("the report is readable");
    let charts_in_file = page.matches("<figure class=\"chart\"").count();
    // The probe goes into a copy beside the report, so the copy sees what the report sees.
    let probe_copy = html.with_file_name(".browser-check.html");
    let probed = match page.find("<head>") {
        Some(at) => format!("{}{PROBE}{}", &page[..at + 6], &page[at + 6..]),
        None => format!("{PROBE}{page}"),
    };
    std::fs::write(&probe_copy, probed).expect("write the probed copy");
    let dump = chromium(
        &["--dump-dom", "--enable-logging=stderr", "--v=0"],
        &probe_copy,
    );
    let _ = std::fs::remove_file(&probe_copy);
    let dom = String::from_utf8_lossy(&dump.stdout);
    let stderr = String::from_utf8_lossy(&dump.stderr);
    let verdict = verdict(&dom).unwrap_or_else(|| {
        panic!("Chromium's DOM has no verdict from the probe; stderr:\n{stderr}")
    });
    let mut problems = Vec::new();
    for line in stderr.lines().filter(|l| l.contains(":CONSOLE")) {
        problems.push(format!("console message: {line}"));
    }
    let strings = |key: &str| -> Vec<String> {
        verdict[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    for e in strings("errors") {
        problems.push(format!("page error: {e}"));
    }
    for r in strings("resources") {
        problems.push(format!("loads an outside resource: {r}"));
    }
    let broken = strings("broken");
    if !broken.is_empty() {
        problems.push(format!(
            "{} words break across lines, e.g. {:?}",
            broken.len(),
            &broken[..broken.len().min(8)]
        ));
    }
    let cut = strings("cut");
    if !cut.is_empty() {
        problems.push(format!(
            "{} table cells are narrower than their text, e.g. {:?}",
            cut.len(),
            &cut[..cut.len().min(8)]
        ));
    }
    let wide = strings("wide");
    if !wide.is_empty() {
        problems.push(format!(
            "{} elements outside a scroll box are wider than the window, e.g. {:?}",
            wide.len(),
            &wide[..wide.len().min(8)]
        ));
    }
    let number = |key: &str| verdict[key].as_f64().unwrap_or(0.0);
    if number("scrollWidth") > number("innerWidth") {
        problems.push(format!(
            "the page scrolls sideways: {} px wide in a {} px window",
            number("scrollWidth"),
            number("innerWidth")
        ));
    }
    let charts: Vec<ChartSeen> = (verdict["charts"].as_array().cloned().unwrap_or_default())
        .iter()
        .map(|c| ChartSeen {
            id: c["id"].as_str().unwrap_or("").to_string(),
            kind: c["kind"].as_str().unwrap_or("").to_string(),
            width: c["width"].as_f64().unwrap_or(0.0),
            height: c["height"].as_f64().unwrap_or(0.0),
            drawn: c["drawn"].as_u64().unwrap_or(0),
        })
        .collect();
    if charts.len() != charts_in_file {
        problems.push(format!(
            "{} charts in the file but {} laid out",
            charts_in_file,
            charts.len()
        ));
    }
    for c in &charts {
        if c.width < 300.0 || c.height < 100.0 || c.drawn < 10 {
            problems.push(format!(
                "chart {} ({}) is blank or tiny: {:.0} × {:.0} px, {} drawn elements",
                c.id, c.kind, c.width, c.height, c.drawn
            ));
        }
    }
    let screenshot = out.join("screen.png");
    chromium(&[&format!("--screenshot={}", screenshot.display())], html);
    let page_height = number("height");
    let full_height = (page_height.ceil() as u64).clamp(u64::from(HEIGHT), MAX_FULL_HEIGHT);
    let full_screenshot = out.join("full.png");
    chromium_sized(
        &[&format!("--screenshot={}", full_screenshot.display())],
        html,
        full_height,
    );
    for shot in [&screenshot, &full_screenshot] {
        let size = std::fs::metadata(shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 1000,
            "Chromium saved no screenshot at {}",
            shot.display()
        );
    }
    BrowserCheck {
        screenshot,
        full_screenshot,
        charts_in_file,
        charts,
        page_height,
        text: verdict["text"].as_str().unwrap_or("").to_string(),
        problems,
    }
}

/// The probe's JSON out of the dumped DOM.
fn verdict(dom: &str) -> Option<Value> {
    let start =
        dom.find("<pre id=\"edgefleet-verdict\">")? + "<pre id=\"edgefleet-verdict\">".len();
    let end = start + dom[start..].find("</pre>")?;
    let text = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    serde_json::from_str(&text).ok()
}

fn chromium(args: &[&str], page: &Path) -> Output {
    chromium_sized(args, page, u64::from(HEIGHT))
}

/// Runs headless Chromium on `page` in a `WIDTH` × `height` window; panics when it is missing,
/// fails or takes over two minutes.
fn chromium_sized(args: &[&str], page: &Path, height: u64) -> Output {
    // A profile of its own for each start (tests run side by side in one process), removed after.
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let profile =
        std::env::temp_dir().join(format!("edgefleet-chromium-{}-{start}", std::process::id()));
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless=new",
            // Tests run as root, where Chromium refuses its sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--window-size={WIDTH},{height}"),
        ])
        .args(args)
        .arg(format!(
            "file://{}",
            page.canonicalize().expect("page path").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "chromium is missing: run scripts/setup_packaging.sh as root (it installs Debian's \
             chromium package; the test command does) before the report's browser test"
        ),
        Err(e) => panic!("cannot start chromium: {e}"),
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = done.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    std::thread::spawn(move || {
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if finished.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
        }
        // Still running after two minutes: the wait below then returns.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    });
    let output = child.wait_with_output().expect("wait for chromium");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
