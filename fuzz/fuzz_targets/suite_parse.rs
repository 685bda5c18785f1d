//! A suite's text, as `bench run`, `schedule add` and `rollout start --gate-suite` hand it to
//! the controller, and the name rules every model, version and file name passes: whatever the
//! text, parsing ends in a `Suite` or a `SuiteError`, and a parsed suite plans without panicking.

#![no_main]

use edgefleet_suites::names::{self, NameKind};
use edgefleet_suites::{ModelRef, Suite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(suite) = Suite::parse(text, "fuzz.toml") {
        let _ = suite.plan();
        let _ = suite.input_files();
        for model in suite.models() {
            let _ = model.to_string();
            let _ = model.registered();
        }
        assert_eq!(suite.sha256, edgefleet_suites::suite_hash(text));
    }
    // The name rules, on the text and on each of its lines.
    for value in std::iter::once(text).chain(text.lines()) {
        for kind in [NameKind::Model, NameKind::Version, NameKind::File] {
            if let Err(e) = names::check(kind, value) {
                let _ = e.to_string();
            }
        }
        if let Ok(r) = value.parse::<ModelRef>() {
            // Whatever `name@version` parses is a name and a version the agents accept.
            assert!(names::model_name(&r.name).is_ok() && names::version(&r.version).is_ok());
            assert_eq!(r.to_string().parse::<ModelRef>(), Ok(r));
        }
    }
    let _ = names::file_names(text.lines());
});
