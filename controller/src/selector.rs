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

/// A selector condition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("selector `{0}` is not key=value or key!=value")]
    NotKeyValue(String),
    #[error("selector `{0}` has no key")]
    NoKey(String),
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
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(ConditionError::NoKey(s.to_string()));
    }
    Ok(Condition {
        key: key.to_string(),
        value: value.trim().to_string(),
        negated,
    })
}

/// Parses a selector expression: `key=value` / `key!=value` conditions joined by commas, all of
/// which must hold (`hw=rpi5,site!=lab`).
pub fn parse_selector(expr: &str) -> Result<Vec<Condition>, ConditionError> {
    if expr.trim().is_empty() {
        return Ok(Vec::new());
    }
    expr.split(',').map(parse_condition).collect()
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
}
