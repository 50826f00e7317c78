//! The monitoring keys (DESIGN.md §12): `healthchecks: URL`, the `on_start`,
//! `on_success` and `on_failure` hooks (each an HTTP request like an HTTP job's, with
//! the run's facts as `${CHIME_*}`), and `report_missed`. Messages show templates only.

use std::time::Duration;

use super::keys::list;
use super::retry::RetrySettings;
use super::{FileChecker, escaped};
use crate::config::interpolate::{interpolate, template};
use crate::config::tree::{Node, NodeKind};
use crate::job::{Hook, Piece, PingUrl, RunVar, Template};

pub(super) const HOOK_KEYS: &[&str] = &["url", "method", "headers", "body", "timeout", "retry"];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// A hook's timeout unless it sets one.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What `url` must be, for messages.
fn url_problem(url: &str) -> Option<String> {
    match reqwest::Url::parse(url) {
        Err(err) => Some(format!("is not a valid URL ({err})")),
        Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => Some(format!(
            "has the scheme `{}`, which chime cannot send to; it must start with http:// or https://",
            escaped(parsed.scheme())
        )),
        Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
            Some("has no host".to_string())
        }
        Ok(_) => None,
    }
}

/// A template with each run fact replaced by a sample value, to check its shape.
fn sample(template: &Template) -> String {
    let mut out = String::new();
    for piece in &template.0 {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var { var, .. } => out.push_str(match var {
                RunVar::ExitCode | RunVar::DurationMs => "0",
                _ => "x",
            }),
        }
    }
    out
}

impl FileChecker<'_, '_> {
    /// `healthchecks: URL`.
    pub(super) fn healthchecks(&mut self, path: &str, node: &Node) -> Option<PingUrl> {
        let NodeKind::Str(written) = &node.kind else {
            let message = format!(
                "`{path}` must be a ping URL such as \"https://hc-ping.com/${{HC_UUID}}\", not {}",
                node.describe()
            );
            self.error(node, message);
            return None;
        };
        let url = match interpolate(written, &self.opts.env) {
            Ok(url) => url,
            Err(problems) => {
                for problem in problems {
                    self.error(node, problem.message(path));
                }
                return None;
            }
        };
        if let Some(problem) = url_problem(&url) {
            let message = format!(
                "`{path}` \"{}\" {problem}; write the check's ping URL, e.g. \
                 \"https://hc-ping.com/${{HC_UUID}}\"",
                written.escape_debug()
            );
            self.error(node, message);
            return None;
        }
        Some(PingUrl {
            url: match url.split_once('?') {
                Some((base, query)) => format!("{}?{query}", base.trim_end_matches('/')),
                None => url.trim_end_matches('/').to_string(),
            },
            template: written.clone(),
        })
    }

    /// `on_start`, `on_success`, `on_failure`: a mapping like `http:`.
    pub(super) fn hook(&mut self, path: &str, node: &Node, in_defaults: bool) -> Option<Hook> {
        if !matches!(node.kind, NodeKind::Map(_)) {
            let message = format!(
                "`{path}` must be a mapping with at least a `url`, not {}; write e.g. \
                 `{path}: {{ url: \"https://ntfy.sh/alerts\", method: POST, body: \"${{CHIME_JOB}} ${{CHIME_OUTCOME}}\" }}`",
                node.describe()
            );
            self.error(node, message);
            return None;
        }
        let mut ok = true;
        let mut url: Option<(Template, String)> = None;
        let mut method = "GET".to_string();
        let mut headers = Vec::new();
        let mut body = None;
        let mut timeout = DEFAULT_HOOK_TIMEOUT;
        let mut retry = RetrySettings::default();
        let prefix = format!("{path}.");
        for field in self.entries(node, &prefix, true) {
            let value = field.value;
            let key_path = format!("{prefix}{}", field.key);
            match field.key.as_ref() {
                "url" => {
                    url = self.hook_url(&key_path, value);
                    ok &= url.is_some();
                }
                "method" => match &value.kind {
                    NodeKind::Str(text)
                        if METHODS.contains(&text.to_ascii_uppercase().as_str()) =>
                    {
                        method = text.to_ascii_uppercase();
                    }
                    _ => {
                        let message = format!(
                            "`{key_path}` must be one of {}, not `{}`",
                            list(METHODS),
                            escaped(&self.text(value))
                        );
                        self.error(value, message);
                        ok = false;
                    }
                },
                "headers" => match self.hook_headers(&key_path, value) {
                    Some(found) => headers = found,
                    None => ok = false,
                },
                "body" => {
                    body = self.hook_text(&key_path, value);
                    ok &= body.is_some();
                }
                "timeout" => match self.duration(&key_path, value, Some("leave it out for 10s")) {
                    Some(found) => timeout = found,
                    None => ok = false,
                },
                "retry" => retry = self.retry(&key_path, value, in_defaults),
                _ => {
                    self.unknown_key(&field, &prefix, HOOK_KEYS, &format!("`{path}`"));
                    ok = false;
                }
            }
        }
        let retry = self.retry_policy(&retry);
        if url.is_none() && ok {
            self.error(
                node,
                format!("`{path}` has no `url`; add one, e.g. `url: \"https://example.com/hook\"`"),
            );
        }
        let (url, url_template) = url?;
        Some(Hook {
            method,
            url,
            url_template,
            headers,
            body,
            timeout,
            retry: retry?,
        })
        .filter(|_| ok)
    }

    fn hook_text(&mut self, path: &str, node: &Node) -> Option<Template> {
        let Some(written) = node.scalar_text(self.src) else {
            let message = format!("`{path}` must be a string, not {}", node.describe());
            self.error(node, message);
            return None;
        };
        match template(&written, &self.opts.env) {
            Ok(found) => Some(found),
            Err(problems) => {
                for problem in problems {
                    self.error(node, problem.message(path));
                }
                None
            }
        }
    }

    fn hook_url(&mut self, path: &str, node: &Node) -> Option<(Template, String)> {
        let NodeKind::Str(written) = &node.kind else {
            let message = format!(
                "`{path}` must be a string such as \"https://example.com/hook\", not {}",
                node.describe()
            );
            self.error(node, message);
            return None;
        };
        let url = self.hook_text(path, node)?;
        if let Some(problem) = url_problem(&sample(&url)) {
            let message = format!(
                "`{path}` \"{}\" {problem}; write an absolute URL such as \
                 \"https://example.com/hook\"",
                written.escape_debug()
            );
            self.error(node, message);
            return None;
        }
        Some((url, written.clone()))
    }

    fn hook_headers(&mut self, path: &str, node: &Node) -> Option<Vec<(String, Template)>> {
        if !matches!(node.kind, NodeKind::Map(_)) {
            let message = format!(
                "`{path}` must be a mapping of header names to values, not {}",
                node.describe()
            );
            self.error(node, message);
            return None;
        }
        let mut headers = Vec::new();
        let mut ok = true;
        for field in self.entries(node, &format!("{path}."), true) {
            let name = field.key.as_ref();
            let header_path = format!("{path}.{}", escaped(name));
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                let message = format!(
                    "`{header_path}` is not a valid header name; use letters, digits and `-`"
                );
                self.error(field.key_node, message);
                ok = false;
                continue;
            }
            match self.hook_text(&header_path, field.value) {
                Some(value) => headers.push((name.to_string(), value)),
                None => ok = false,
            }
        }
        ok.then_some(headers)
    }
}
