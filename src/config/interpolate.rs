//! `${VAR}` substitution in `http.url`, header values, `body` and `env` values, and in
//! hook (`on_start` …) URLs, headers and bodies with the run's `${CHIME_*}` facts.
//!
//! `${NAME}` is replaced by the variable's value; `${NAME:-default}` by the default text
//! when NAME is unset or empty; `$${` writes a literal `${`; a `$` followed by anything
//! else is kept as it is. `${file:/path}` is replaced by the file's contents without its
//! trailing newline, and `${credential:NAME}` by `$CREDENTIALS_DIRECTORY/NAME`'s (systemd's
//! `LoadCredential=`); both are read at every load, so a reload picks up a rotated
//! secret. Errors name variables and files, never values.

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
    /// `${file:…}` or `${credential:…}` that could not be read: the reference as
    /// written, and why (never the contents).
    Secret { reference: String, reason: String },
}

/// Secrets are tokens and passwords; a larger file is not one.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

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
            Problem::Secret { reference, reason } => {
                format!("`{key}` uses `${{{reference}}}`, which cannot be used: {reason}")
            }
        }
    }
}

/// The secret `${reference}` names, for `file:` and `credential:` references; `None`
/// for anything else.
fn secret(reference: &str, env: &HashMap<String, String>) -> Option<Result<String, Problem>> {
    let problem = |reason: String| Problem::Secret {
        reference: reference.to_string(),
        reason,
    };
    let path = if let Some(path) = reference.strip_prefix("file:") {
        if !path.starts_with('/') {
            return Some(Err(problem(
                "the path must be absolute; write e.g. `${file:/etc/chime/token}`".to_string(),
            )));
        }
        std::path::PathBuf::from(path)
    } else if let Some(name) = reference.strip_prefix("credential:") {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Some(Err(problem(
                "a credential name is a plain file name, as in `LoadCredential=NAME:/path`"
                    .to_string(),
            )));
        }
        let Some(dir) = env
            .get("CREDENTIALS_DIRECTORY")
            .filter(|dir| !dir.is_empty())
        else {
            return Some(Err(problem(format!(
                "CREDENTIALS_DIRECTORY is not set; systemd sets it when the unit has \
                 `LoadCredential={name}:/path/to/secret` (see systemd/chime.service)"
            ))));
        };
        std::path::Path::new(dir).join(name)
    } else {
        return None;
    };
    Some(read_secret(&path).map_err(problem))
}

/// A secret file's contents without one trailing newline (`\n` or `\r\n`).
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;

    let shown = path.display();
    let cannot = |err: std::io::Error| {
        let text = err.to_string();
        let text = match err.raw_os_error() {
            Some(code) => text.replace(&format!(" (os error {code})"), ""),
            None => text,
        };
        format!("cannot read `{shown}`: {text}")
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "`{shown}` is larger than {} KiB, which no secret is; name the right file",
            MAX_SECRET_BYTES / 1024
        ));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| format!("`{shown}` is not UTF-8 text; store the secret as text"))?;
    if text.contains('\0') {
        return Err(format!(
            "`{shown}` contains a NUL byte, which no value can hold"
        ));
    }
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Substitutes every `${NAME}` in `template` from `env`; reports every problem.
pub(super) fn interpolate(
    template: &str,
    env: &HashMap<String, String>,
) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(template.len());
    let mut problems = Vec::new();
    let walked = walk(template, |part| match part {
        Part::Text(text) => out.push_str(text),
        Part::Placeholder(inside) => {
            if let Some(found) = secret(inside, env) {
                match found {
                    Ok(value) => out.push_str(&value),
                    Err(problem) => problems.push(problem),
                }
                return;
            }
            let (name, value) = lookup(inside, env);
            if !is_var_name(name) {
                problems.push(Problem::BadName(inside.to_string()));
            } else if let Some(value) = value {
                out.push_str(value);
            } else if !problems.contains(&Problem::Unset(name.to_string())) {
                problems.push(Problem::Unset(name.to_string()));
            }
        }
    });
    problems.extend(walked.err());
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// A piece of a template, as [`walk`] finds it.
enum Part<'a> {
    /// Plain text: `$${` has become `${`, and a `$` not followed by `{` stays itself.
    Text(&'a str),
    /// What stands between `${` and `}`.
    Placeholder(&'a str),
}

/// Hands `text` to `each` piece by piece, in order. An unterminated `${` ends the walk
/// there (the rest is dropped) with [`Problem::Unterminated`].
fn walk<'a>(text: &'a str, mut each: impl FnMut(Part<'a>)) -> Result<(), Problem> {
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        each(Part::Text(&rest[..dollar]));
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            each(Part::Text("${"));
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let close = tail.find('}').ok_or(Problem::Unterminated)?;
            each(Part::Placeholder(&tail[..close]));
            rest = &tail[close + 1..];
        } else {
            each(Part::Text("$"));
            rest = &after[1..];
        }
    }
    each(Part::Text(rest));
    Ok(())
}

/// `NAME` or `NAME:-default`: the name, and its value in `env` (the default when the
/// variable is unset, or set but empty).
fn lookup<'v>(inside: &'v str, env: &'v HashMap<String, String>) -> (&'v str, Option<&'v str>) {
    let (name, default) = match inside.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inside, None),
    };
    let value = env
        .get(name)
        .filter(|value| default.is_none() || !value.is_empty())
        .map(String::as_str)
        .or(default);
    (name, value)
}

/// Like [`interpolate`], for hooks: the run's facts (`${CHIME_JOB}` …, see
/// [`RunVar`]) are kept for run time, and `${json:NAME}` gives a variable as a JSON
/// string literal (a service variable at once, a run's fact when the hook is sent).
/// `${file:…}` and `${credential:…}` secrets are read at load as in [`interpolate`]
/// (`${json:file:…}` as a JSON string).
pub(super) fn template(
    text: &str,
    env: &HashMap<String, String>,
) -> Result<Template, Vec<Problem>> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut problems = Vec::new();
    let walked = walk(text, |part| {
        let inside = match part {
            Part::Text(text) => return literal.push_str(text),
            Part::Placeholder(inside) => inside,
        };
        let (json, inside) = match inside.strip_prefix("json:") {
            Some(name) => (true, name),
            None => (false, inside),
        };
        if let Some(found) = secret(inside, env) {
            match found {
                Ok(value) if json => literal.push_str(&serde_json::Value::from(value).to_string()),
                Ok(value) => literal.push_str(&value),
                Err(problem) => problems.push(problem),
            }
            return;
        }
        let (name, value) = lookup(inside, env);
        if !is_var_name(name) {
            problems.push(Problem::BadName(inside.to_string()));
            return;
        }
        if let Some(var) = RunVar::from_name(name) {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
            pieces.push(Piece::Var { var, json });
            return;
        }
        match value {
            Some(value) if json => literal.push_str(&serde_json::Value::from(value).to_string()),
            Some(value) => literal.push_str(value),
            None if !problems.contains(&Problem::Unset(name.to_string())) => {
                problems.push(Problem::Unset(name.to_string()));
            }
            None => {}
        }
    });
    problems.extend(walked.err());
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
    fn secrets_come_from_files_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret-from-file\n").unwrap();
        std::fs::write(dir.path().join("crlf"), "two\r\n").unwrap();
        std::fs::write(dir.path().join("bare"), "no newline").unwrap();
        let mut env = env();
        env.insert(
            "CREDENTIALS_DIRECTORY".into(),
            dir.path().display().to_string(),
        );
        let file = format!("${{file:{}/token}}", dir.path().display());
        assert_eq!(
            interpolate(&format!("Bearer {file}"), &env).unwrap(),
            "Bearer s3cret-from-file"
        );
        assert_eq!(
            interpolate("${credential:crlf}|${credential:bare}", &env).unwrap(),
            "two|no newline"
        );
        // Missing, relative, bad names, no directory: each names the reference only.
        let problems =
            interpolate("${credential:nope}${file:rel}${credential:../x}", &env).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        let message = problems[0].message("env.TOKEN");
        assert!(message.contains("${credential:nope}") && message.contains("No such file"));
        env.remove("CREDENTIALS_DIRECTORY");
        let problems = interpolate("${credential:bare}", &env).unwrap_err();
        assert!(problems[0].message("x").contains("LoadCredential=bare"));
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
    fn hook_templates_read_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret-from-file\n").unwrap();
        let mut env = env();
        env.insert(
            "CREDENTIALS_DIRECTORY".into(),
            dir.path().display().to_string(),
        );
        let got = template("t=${credential:token}&j=${json:credential:token}", &env).unwrap();
        assert_eq!(
            got.0,
            [Piece::Text(
                "t=s3cret-from-file&j=\"s3cret-from-file\"".into()
            )]
        );
        let problems = template("${credential:nope}", &env).unwrap_err();
        assert!(
            matches!(&problems[0], Problem::Secret { reference, .. } if reference == "credential:nope")
        );
    }

    #[test]
    fn var_names() {
        assert!(is_var_name("HC_UUID") && is_var_name("_x1"));
        assert!(!is_var_name("") && !is_var_name("1X") && !is_var_name("A-B"));
    }
}
