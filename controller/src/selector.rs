//! Selector expressions: which agents a command means, as `key=value` / `key!=value` conditions
//! on labels and hardware fields, comma-joined, all of which must hold. Parsing only; matching an
//! agent is [`crate::planning::matches`].

/// One `key=value` or `key!=value` condition on an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: String,
    pub value: String,
    pub negated: bool,
}

/// Agent fields a selector can name besides labels.
pub const FIELDS: [&str; 7] = ["name", "id", "arch", "cpu_model", "cores", "os", "hostname"];

/// The help every `--select` shows: one syntax for every command that selects agents.
pub const HELP: &str = "Which agents: KEY=VALUE or KEY!=VALUE on labels or on the fields \
name, id, arch, cpu_model, cores, os, hostname; comma-separated or repeated, all must hold \
(e.g. --select hw=rpi5,site!=lab). Default: every agent.";

/// A selector condition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("selector `{0}` is not key=value or key!=value")]
    NotKeyValue(String),
    #[error("selector `{0}` has no key")]
    NoKey(String),
    #[error("selector `{0}`: a key has no spaces, `=`, `!` or `,`")]
    BadKey(String),
    #[error("selector `{0}`: a value cannot hold `=` or start with `!` (join conditions with commas: hw=rpi5,site!=lab)")]
    BadValue(String),
    #[error("selector `{0}` has an empty condition (two commas, or one at an end)")]
    Empty(String),
}

/// Parses `key=value` / `key!=value`.
pub fn parse_condition(s: &str) -> Result<Condition, ConditionError> {
    let (key, value, negated) = if let Some((k, v)) = s.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = s.split_once('=') {
        (k, v, false)
    } else {
        return Err(ConditionError::NotKeyValue(s.to_string()));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(ConditionError::NoKey(s.to_string()));
    }
    if key.contains(['=', '!', ',']) || key.contains(char::is_whitespace) {
        return Err(ConditionError::BadKey(s.to_string()));
    }
    // Values may hold spaces (cpu_model "Intel(R) Core(TM) i5", os "Debian GNU/Linux 12"); a
    // second `=` is two conditions run together (`hw=rpi5 site=lab`), a leading `!` a typo of
    // `!=` (`hw=!rpi5`).
    let value = value.trim();
    if value.contains(['=', ',']) || value.starts_with('!') {
        return Err(ConditionError::BadValue(s.to_string()));
    }
    Ok(Condition {
        key: key.to_string(),
        value: value.to_string(),
        negated,
    })
}

/// Parses a selector expression: `key=value` / `key!=value` conditions joined by commas, all of
/// which must hold (`hw=rpi5,site!=lab`).
pub fn parse_selector(expr: &str) -> Result<Vec<Condition>, ConditionError> {
    if expr.trim().is_empty() {
        return Ok(Vec::new());
    }
    expr.split(',')
        .map(|item| {
            if item.trim().is_empty() {
                Err(ConditionError::Empty(expr.to_string()))
            } else {
                parse_condition(item)
            }
        })
        .collect()
}

/// Parses several selector expressions (repeated `--select`), all of whose conditions must
/// hold: the one reading of the `select` lists the admin API takes.
pub fn parse_selectors(exprs: &[String]) -> Result<Vec<Condition>, ConditionError> {
    let mut conditions = Vec::new();
    for expr in exprs {
        conditions.extend(parse_selector(expr)?);
    }
    Ok(conditions)
}

/// Checks one `--select` on the command line, so that a mistake stops there in one line; the
/// controller checks again.
pub fn check_arg(expr: &str) -> Result<String, String> {
    parse_selector(expr)
        .map(|_| expr.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_join_conditions_with_commas() {
        let conds = parse_selector("hw=rpi5,site!=lab").unwrap();
        assert_eq!(conds.len(), 2);
        assert!(conds[1].negated);
        assert!(parse_selector("hw").is_err());
        assert!(parse_selector("").unwrap().is_empty());
    }

    #[test]
    fn a_selector_it_does_not_understand_is_an_error_never_everything() {
        for bad in [
            "hw=rpi5 site=lab",
            "hw=rpi5;site=lab",
            "hw=rpi5,,site=lab",
            "hw=rpi5,",
            ",hw=rpi5",
            "hw==rpi5",
            "hw=rpi5=x",
            "a!b=c",
            "hw=!rpi5",
            "a b=c",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
            assert!(check_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_with_spaces_such_as_cpu_models_select() {
        let conds =
            parse_selector("cpu_model=Intel(R) Core(TM) i5-1240P,os!=Debian GNU/Linux 11").unwrap();
        assert_eq!(conds[0].value, "Intel(R) Core(TM) i5-1240P");
        assert_eq!(conds[1].value, "Debian GNU/Linux 11");
        assert!(conds[1].negated);
        assert!(parse_selector("rack:pos=3").is_ok());
    }

    #[test]
    fn repeated_selectors_add_their_conditions() {
        let conds =
            parse_selectors(&["hw=rpi5,site!=lab".to_string(), "os=linux".to_string()]).unwrap();
        let keys: Vec<_> = conds.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["hw", "site", "os"]);
        assert!(conds[1].negated);
    }
}
