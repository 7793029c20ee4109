//! Failpoint setup from the `FAILPOINTS` environment variable (only in builds with the `failpoints` feature).
//!
//! Syntax: `name=actions;name=actions`, with the `fail` crate's actions (`return`, `2*return->off`,
//! `sleep(100)`, `panic`, `off`, …) plus `exit` / `exit(CODE)`, which ends the process on the spot — how a
//! process test crashes the daemon at an exact line. Names are listed in docs/FAILPOINTS.md.

/// Why `FAILPOINTS` could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FailpointsError {
    #[error("FAILPOINTS: `{0}` is not name=action")]
    NotNameAction(String),
    #[error("FAILPOINTS: bad exit code in `{0}`")]
    BadExitCode(String),
    /// The `fail` crate refused the action; its own message.
    #[error("{0}")]
    Rejected(String),
    #[error("FAILPOINTS is set but this build has no failpoints (build with --features failpoints)")]
    NotCompiled,
}

/// Exit code used by the `exit` action when none is given.
pub const DEFAULT_EXIT_CODE: i32 = 86;

/// Configures failpoints from `FAILPOINTS`. Returns the names configured.
#[cfg(feature = "failpoints")]
pub fn setup_from_env() -> Result<Vec<String>, FailpointsError> {
    let Ok(spec) = std::env::var("FAILPOINTS") else { return Ok(Vec::new()) };
    let mut names = Vec::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, action) = entry.split_once('=').ok_or_else(|| FailpointsError::NotNameAction(entry.to_owned()))?;
        let (name, action) = (name.trim().to_owned(), action.trim());
        if let Some(code) = parse_exit(action)? {
            let label = name.clone();
            fail::cfg_callback(name.clone(), move || {
                eprintln!("failpoint {label}: exit({code})");
                std::process::exit(code);
            })
            .map_err(FailpointsError::Rejected)?;
        } else {
            fail::cfg(name.clone(), action).map_err(FailpointsError::Rejected)?;
        }
        names.push(name);
    }
    Ok(names)
}

/// Without the feature there is nothing to configure; a set `FAILPOINTS` is reported, not ignored silently.
#[cfg(not(feature = "failpoints"))]
pub fn setup_from_env() -> Result<Vec<String>, FailpointsError> {
    match std::env::var("FAILPOINTS") {
        Ok(spec) if !spec.trim().is_empty() => Err(FailpointsError::NotCompiled),
        _ => Ok(Vec::new()),
    }
}

#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn parse_exit(action: &str) -> Result<Option<i32>, FailpointsError> {
    if action == "exit" {
        return Ok(Some(DEFAULT_EXIT_CODE));
    }
    match action.strip_prefix("exit(").and_then(|rest| rest.strip_suffix(')')) {
        Some(code) => code.trim().parse().map(Some).map_err(|_| FailpointsError::BadExitCode(action.to_owned())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_actions_parse() {
        assert_eq!(parse_exit("exit"), Ok(Some(DEFAULT_EXIT_CODE)));
        assert_eq!(parse_exit("exit(3)"), Ok(Some(3)));
        assert_eq!(parse_exit("return"), Ok(None));
        assert!(parse_exit("exit(x)").is_err());
    }
}
