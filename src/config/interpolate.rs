//! `${VAR}` substitution in `http.url`, header values and `body`.
//!
//! `${NAME}` is replaced by the variable's value; `${NAME:-default}` by the default text
//! when NAME is unset or empty; `$${` writes a literal `${`; a `$` followed by anything
//! else is kept as it is. Errors name variables, never values.

use std::collections::HashMap;

use crate::job::{Piece, RunVar, Template};

/// What is wrong with a template. Carries no interpolated value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    /// `${NAME}` where NAME is not set.
    Unset(String),
    /// `${` without a closing `}`.
    Unterminated,
    /// `${...}` whose content is not a variable name.
    BadName(String),
}

impl Problem {
    /// The message for `key` (e.g. `http.url`), with how to fix it.
    pub(super) fn message(&self, key: &str) -> String {
        match self {
            Problem::Unset(name) => format!(
                "`{key}` uses `${{{name}}}`, but {name} is not set in the service's \
                 environment; set {name} for the service (e.g. `Environment=` in its \
                 systemd unit), give a default with `${{{name}:-default}}`, or remove it"
            ),
            Problem::Unterminated => format!(
                "`{key}` has a `${{` without a closing `}}`; write `${{NAME}}`, or `$${{` \
                 for a literal `${{`"
            ),
            Problem::BadName(name) => format!(
                "`{key}` uses `${{{name}}}`, which is not a variable name; names are \
                 letters, digits and `_`, not starting with a digit (write `$${{` for a \
                 literal `${{`)"
            ),
        }
    }
}

/// Substitutes every `${NAME}` in `template` from `env`; reports every problem.
pub(super) fn interpolate(
    template: &str,
    env: &HashMap<String, String>,
) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(template.len());
    let mut problems = Vec::new();
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                problems.push(Problem::Unterminated);
                rest = "";
                break;
            };
            let inside = &tail[..close];
            let (name, default) = match inside.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inside, None),
            };
            let value = env
                .get(name)
                .filter(|value| default.is_none() || !value.is_empty());
            if !is_var_name(name) {
                problems.push(Problem::BadName(inside.to_string()));
            } else if let Some(value) = value.map(String::as_str).or(default) {
                out.push_str(value);
            } else if !problems.contains(&Problem::Unset(name.to_string())) {
                problems.push(Problem::Unset(name.to_string()));
            }
            rest = &tail[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Like [`interpolate`], for hooks: the run's facts (`${CHIME_JOB}` …, see
/// [`RunVar`]) are kept for run time, and `${json:NAME}` gives a variable as a JSON
/// string literal (a service variable at once, a run's fact when the hook is sent).
pub(super) fn template(
    text: &str,
    env: &HashMap<String, String>,
) -> Result<Template, Vec<Problem>> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        literal.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            literal.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                problems.push(Problem::Unterminated);
                rest = "";
                break;
            };
            let inside = &tail[..close];
            rest = &tail[close + 1..];
            let (json, inside) = match inside.strip_prefix("json:") {
                Some(name) => (true, name),
                None => (false, inside),
            };
            let (name, default) = match inside.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inside, None),
            };
            if !is_var_name(name) {
                problems.push(Problem::BadName(inside.to_string()));
                continue;
            }
            if let Some(var) = RunVar::from_name(name) {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
                pieces.push(Piece::Var { var, json });
                continue;
            }
            let value = env
                .get(name)
                .filter(|value| default.is_none() || !value.is_empty())
                .map(String::as_str)
                .or(default);
            match value {
                Some(value) if json => {
                    literal.push_str(&serde_json::Value::from(value).to_string())
                }
                Some(value) => literal.push_str(value),
                None if !problems.contains(&Problem::Unset(name.to_string())) => {
                    problems.push(Problem::Unset(name.to_string()));
                }
                None => {}
            }
        } else {
            literal.push('$');
            rest = &after[1..];
        }
    }
    literal.push_str(rest);
    pieces.push(Piece::Text(literal));
    pieces.retain(|piece| !matches!(piece, Piece::Text(text) if text.is_empty()));
    if problems.is_empty() {
        Ok(Template(pieces))
    } else {
        Err(problems)
    }
}

/// A portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("HC_UUID", "abc-123"), ("TOKEN", "s3cret"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_variables() {
        let got = interpolate("https://hc/ping/${HC_UUID}?t=${TOKEN}${EMPTY}", &env());
        assert_eq!(got.unwrap(), "https://hc/ping/abc-123?t=s3cret");
        assert_eq!(interpolate("no vars", &env()).unwrap(), "no vars");
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        let got = interpolate(
            "${NOPE:-http://x:80/a}|${EMPTY:-d}|${TOKEN:-d}|${NOPE:-}",
            &env(),
        );
        assert_eq!(got.unwrap(), "http://x:80/a|d|s3cret|");
        let problems = interpolate("${1X:-d}", &env()).unwrap_err();
        assert_eq!(problems, [Problem::BadName("1X:-d".into())]);
    }

    #[test]
    fn escapes_and_lone_dollars() {
        assert_eq!(
            interpolate("$${HOME} $5 a$", &env()).unwrap(),
            "${HOME} $5 a$"
        );
        // `$` then `$${`: a lone dollar, then a literal `${`.
        assert_eq!(interpolate("$$${TOKEN}", &env()).unwrap(), "$${TOKEN}");
    }

    #[test]
    fn reports_every_problem_without_values() {
        let problems = interpolate("${NOPE}/${NOPE}/${ALSO}/${1X}/${", &env()).unwrap_err();
        assert_eq!(
            problems,
            [
                Problem::Unset("NOPE".into()),
                Problem::Unset("ALSO".into()),
                Problem::BadName("1X".into()),
                Problem::Unterminated,
            ]
        );
        let message = Problem::Unset("NOPE".into()).message("http.url");
        assert!(
            message.contains("`${NOPE}`") && message.contains("not set"),
            "{message}"
        );
    }

    #[test]
    fn hook_templates_keep_the_run_facts_for_later() {
        let got = template(
            "${HC_UUID}/${CHIME_JOB}?o=${json:CHIME_OUTCOME}&t=${json:TOKEN}$${x}",
            &env(),
        )
        .unwrap();
        assert_eq!(
            got.0,
            [
                Piece::Text("abc-123/".into()),
                Piece::Var {
                    var: RunVar::Job,
                    json: false
                },
                Piece::Text("?o=".into()),
                Piece::Var {
                    var: RunVar::Outcome,
                    json: true
                },
                Piece::Text("&t=\"s3cret\"${x}".into()),
            ]
        );
        let problems = template("${CHIME_NOPE}${json:}", &env()).unwrap_err();
        assert_eq!(
            problems,
            [
                Problem::Unset("CHIME_NOPE".into()),
                Problem::BadName("".into())
            ]
        );
    }

    #[test]
    fn var_names() {
        assert!(is_var_name("HC_UUID") && is_var_name("_x1"));
        assert!(!is_var_name("") && !is_var_name("1X") && !is_var_name("A-B"));
    }
}
