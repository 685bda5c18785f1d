//! Names that cannot escape: the one check for model names, versions and companion file names,
//! shared by the controller (`models add` refuses them) and the agent (an install refuses them,
//! even from a signed manifest).
//!
//! Each of these names becomes exactly one path component in the agent's layout,
//! `DATA/models/NAME/VERSION/FILE`, beside the names that layout keeps for itself: a model's
//! `active` link and `history` list, a version's `manifest.pb` and `manifest.sig`, and the
//! dot-names of staging folders and temporary files. A name is refused when it is empty, longer
//! than [`MAX_LEN`] bytes, holds a path separator (`/` or `\`) or a NUL or other control
//! character, is `.` or `..`, starts with a dot, or is one of the [`RESERVED`] names.

use std::fmt;

/// The longest name, in bytes.
pub const MAX_LEN: usize = 128;

/// A model's link to its active version: `DATA/models/NAME/active`.
pub const ACTIVE: &str = "active";
/// A model's list of kept versions, newest first: `DATA/models/NAME/history`.
pub const HISTORY: &str = "history";
/// A version's encoded manifest: `DATA/models/NAME/VERSION/manifest.pb`.
pub const MANIFEST_FILE: &str = "manifest.pb";
/// The controller's signature of the manifest, beside it.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// A version is written to `DATA/models/NAME/.staging-VERSION` before it is renamed into place.
pub const STAGING_PREFIX: &str = ".staging-";
/// The new `active` link before its atomic rename.
pub const ACTIVE_TMP: &str = ".active.tmp";
/// The new `history` before its atomic rename.
pub const HISTORY_TMP: &str = ".history.tmp";

/// Every name the agent's layout keeps for itself; no model, version or file may take one.
/// (The dot-names are refused by the leading-dot rule too; they are listed to say why.)
pub const RESERVED: [&str; 6] = [
    ACTIVE,
    HISTORY,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    ACTIVE_TMP,
    HISTORY_TMP,
];

/// What a name names, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Model,
    Version,
    File,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Model => "model name",
            NameKind::Version => "version",
            NameKind::File => "file name",
        })
    }
}

/// Why a name was refused; each message is one line naming the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} must not be empty")]
    Empty { kind: NameKind },
    #[error("{kind} `{}` is {} bytes long; at most {MAX_LEN} are allowed", shown(.value), .value.len())]
    TooLong { kind: NameKind, value: String },
    #[error("{kind} `{}` must not contain a path separator (`/` or `\\`)", shown(.value))]
    Separator { kind: NameKind, value: String },
    #[error("{kind} `{}` must not contain NUL or other control characters", shown(.value))]
    Control { kind: NameKind, value: String },
    #[error("{kind} `{}` must not be `.` or `..`", shown(.value))]
    Dots { kind: NameKind, value: String },
    #[error("{kind} `{}` must not start with a dot", shown(.value))]
    LeadingDot { kind: NameKind, value: String },
    #[error("{kind} `{}` is reserved by the agent's model layout (reserved: {}, {STAGING_PREFIX}*)", shown(.value), RESERVED.join(", "))]
    Reserved { kind: NameKind, value: String },
    #[error("{kind} `{}` is listed twice", shown(.value))]
    Duplicate { kind: NameKind, value: String },
}

impl NameError {
    /// What the refused name names.
    pub fn kind(&self) -> NameKind {
        match self {
            NameError::Empty { kind }
            | NameError::TooLong { kind, .. }
            | NameError::Separator { kind, .. }
            | NameError::Control { kind, .. }
            | NameError::Dots { kind, .. }
            | NameError::LeadingDot { kind, .. }
            | NameError::Reserved { kind, .. }
            | NameError::Duplicate { kind, .. } => *kind,
        }
    }
}

/// The value as a message shows it: control characters escaped (the message stays one line),
/// and cut short past [`MAX_LEN`] characters.
fn shown(value: &str) -> String {
    let mut out: String = value.chars().take(MAX_LEN).collect();
    if out.len() < value.len() {
        out.push('…');
    }
    out.escape_debug().to_string()
}

/// Checks one name of the given kind.
pub fn check(kind: NameKind, value: &str) -> Result<(), NameError> {
    let err = |make: fn(NameKind, String) -> NameError| Err(make(kind, value.to_string()));
    if value.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if value.len() > MAX_LEN {
        return err(|kind, value| NameError::TooLong { kind, value });
    }
    if value.contains(['/', '\\']) {
        return err(|kind, value| NameError::Separator { kind, value });
    }
    if value.chars().any(char::is_control) {
        return err(|kind, value| NameError::Control { kind, value });
    }
    if value == "." || value == ".." {
        return err(|kind, value| NameError::Dots { kind, value });
    }
    if RESERVED.contains(&value) || value.starts_with(STAGING_PREFIX) {
        return err(|kind, value| NameError::Reserved { kind, value });
    }
    if value.starts_with('.') {
        return err(|kind, value| NameError::LeadingDot { kind, value });
    }
    Ok(())
}

/// Checks a model name (`DATA/models/NAME`).
pub fn model_name(value: &str) -> Result<(), NameError> {
    check(NameKind::Model, value)
}

/// Checks a version (`DATA/models/NAME/VERSION`).
pub fn version(value: &str) -> Result<(), NameError> {
    check(NameKind::Version, value)
}

/// Checks one companion file name (`DATA/models/NAME/VERSION/FILE`).
pub fn file_name(value: &str) -> Result<(), NameError> {
    check(NameKind::File, value)
}

/// Checks a version's file names: each one, and that none is listed twice (two files under one
/// name would overwrite each other).
pub fn file_names<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<(), NameError> {
    let mut seen = std::collections::HashSet::new();
    for value in values {
        file_name(value)?;
        if !seen.insert(value) {
            return Err(NameError::Duplicate {
                kind: NameKind::File,
                value: value.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass_for_every_kind() {
        let long = "a".repeat(MAX_LEN);
        for good in [
            "minilm-l6",
            "int8",
            "1.2.3+build",
            "model.onnx",
            "tokenizer.json",
            "a..b",
            "actives",
            "my-history",
            "manifest.pb.bak",
            "naïve",
            "with space",
            long.as_str(),
        ] {
            for kind in [NameKind::Model, NameKind::Version, NameKind::File] {
                assert_eq!(check(kind, good), Ok(()), "{kind} `{good}`");
            }
        }
    }

    /// The rule an error is for, as its variant's name.
    fn rule(e: &NameError) -> &'static str {
        match e {
            NameError::Empty { .. } => "Empty",
            NameError::TooLong { .. } => "TooLong",
            NameError::Separator { .. } => "Separator",
            NameError::Control { .. } => "Control",
            NameError::Dots { .. } => "Dots",
            NameError::LeadingDot { .. } => "LeadingDot",
            NameError::Reserved { .. } => "Reserved",
            NameError::Duplicate { .. } => "Duplicate",
        }
    }

    #[test]
    fn bad_names_say_which_rule_they_break() {
        let long = "a".repeat(MAX_LEN + 1);
        // (value, rule, a piece of the message)
        let cases = [
            ("", "Empty", "must not be empty"),
            (long.as_str(), "TooLong", "129 bytes long; at most 128"),
            (
                "a/b",
                "Separator",
                "`a/b` must not contain a path separator",
            ),
            ("/etc", "Separator", "path separator"),
            ("..\\x", "Separator", "path separator"),
            ("../../x", "Separator", "path separator"),
            ("a\0b", "Control", "`a\\0b` must not contain NUL"),
            ("a\nb", "Control", "`a\\nb`"),
            ("tab\t", "Control", "control characters"),
            ("\u{7f}", "Control", "control characters"),
            (".", "Dots", "`.` must not be `.` or `..`"),
            ("..", "Dots", "must not be `.` or `..`"),
            (
                ".hidden",
                "LeadingDot",
                "`.hidden` must not start with a dot",
            ),
            ("...", "LeadingDot", "start with a dot"),
            (
                "active",
                "Reserved",
                "`active` is reserved by the agent's model layout",
            ),
            ("history", "Reserved", "reserved"),
            ("manifest.pb", "Reserved", "reserved"),
            ("manifest.sig", "Reserved", "reserved"),
            (".staging-1", "Reserved", "reserved"),
            (".staging-", "Reserved", "reserved"),
            (".active.tmp", "Reserved", "reserved"),
            (".history.tmp", "Reserved", "reserved"),
        ];
        for (value, expected, message) in cases {
            for kind in [NameKind::Model, NameKind::Version, NameKind::File] {
                let err = check(kind, value).expect_err(value);
                assert_eq!(rule(&err), expected, "{kind} `{value}`: {err}");
                assert_eq!(err.kind(), kind);
                let text = err.to_string();
                assert!(text.starts_with(&kind.to_string()), "{text}");
                assert!(text.contains(message), "{kind} `{value}`: {text}");
                assert_eq!(text.lines().count(), 1, "one line: {text}");
            }
        }
    }

    #[test]
    fn messages_name_the_kind_and_stay_short() {
        assert_eq!(
            version("active").unwrap_err().to_string(),
            "version `active` is reserved by the agent's model layout (reserved: active, history, \
             manifest.pb, manifest.sig, .active.tmp, .history.tmp, .staging-*)"
        );
        assert_eq!(
            model_name("a/b").unwrap_err().to_string(),
            "model name `a/b` must not contain a path separator (`/` or `\\`)"
        );
        assert_eq!(
            file_name("").unwrap_err().to_string(),
            "file name must not be empty"
        );
        let huge = "x".repeat(10_000);
        let text = model_name(&huge).unwrap_err().to_string();
        assert!(text.len() < 300, "{text}");
        assert!(text.contains("10000 bytes long"), "{text}");
    }

    #[test]
    fn a_versions_files_are_each_checked_and_unique() {
        assert_eq!(file_names(["model.onnx", "tokenizer.json"]), Ok(()));
        assert_eq!(file_names([]), Ok(()));
        assert_eq!(
            file_names(["model.onnx", "manifest.pb"]),
            Err(NameError::Reserved {
                kind: NameKind::File,
                value: "manifest.pb".into()
            })
        );
        let dup = file_names(["model.onnx", "vocab.txt", "model.onnx"]).unwrap_err();
        assert_eq!(dup.to_string(), "file name `model.onnx` is listed twice");
    }
}
