//! The `http:` mapping of a job: URL, method, headers, body and expected statuses, with
//! `${VAR}` interpolated. Only templates ever appear in messages, never the values that
//! interpolation produced.

use super::keys::{Entry, list};
use super::{FileChecker, escaped};
use crate::config::interpolate::interpolate;
use crate::config::tree::{Node, NodeKind};
use crate::job::HttpRequest;

pub(super) const HTTP_KEYS: &[&str] = &["url", "method", "headers", "body", "expect_status"];
pub(super) const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// `http.url` as it will be called, and as written (the only form messages may show).
struct CheckedUrl {
    url: String,
    template: String,
}

impl FileChecker<'_, '_> {
    pub(super) fn http(&mut self, entry: &Entry<'_>) -> Option<HttpRequest> {
        let node = entry.value;
        if !matches!(node.kind, NodeKind::Map(_)) {
            let message = format!(
                "`http` must be a mapping with at least a `url`, not {}; write e.g. \
                 `http: {{ url: \"https://example.com/ping\" }}`",
                node.describe()
            );
            self.error(node, message);
            return None;
        }
        let mut ok = true;
        let mut unknown = false;
        let mut url = None;
        let mut method = Some("GET".to_string());
        let mut headers = Some(Vec::new());
        let mut body = None;
        let mut expect_status = Some(Vec::new());
        for field in self.entries(node, "http.", true) {
            let value = field.value;
            match field.key.as_ref() {
                "url" => {
                    url = self.url(value);
                    ok &= url.is_some();
                }
                "method" => method = self.method(value),
                "headers" => headers = self.headers(value),
                "body" => match &value.kind {
                    NodeKind::Str(template) => {
                        body = self.interpolated("http.body", value, template);
                        ok &= body.is_some();
                    }
                    _ => {
                        let message = format!(
                            "`http.body` must be a string, not {}; quote it, e.g. \
                             `body: '{{\"ok\": true}}'`",
                            value.describe()
                        );
                        self.error(value, message);
                        ok = false;
                    }
                },
                "expect_status" => expect_status = self.expect_status(value),
                _ => {
                    self.unknown_key(&field, "http.", HTTP_KEYS, "`http`");
                    unknown = true;
                }
            }
        }
        // After an unknown key (`uri:`), its "did you mean" says enough.
        if url.is_none() && ok && !unknown {
            self.error(
                entry.key_node,
                "`http` has no `url`; add one, e.g. `url: \"https://example.com/ping\"`"
                    .to_string(),
            );
        }
        let CheckedUrl { url, template } = url?;
        Some(HttpRequest {
            method: method?,
            url,
            url_template: template,
            headers: headers?,
            body,
            expect_status: expect_status?,
        })
        .filter(|_| ok)
    }

    fn url(&mut self, node: &Node) -> Option<CheckedUrl> {
        let NodeKind::Str(template) = &node.kind else {
            let message = format!(
                "`http.url` must be a string such as \"https://example.com/ping\", not {}",
                node.describe()
            );
            self.error(node, message);
            return None;
        };
        let url = self.interpolated("http.url", node, template)?;
        // Only the template may be shown: the interpolated URL can carry secrets.
        let problem = match reqwest::Url::parse(&url) {
            Err(err) => Some(format!("is not a valid URL ({err})")),
            Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => {
                Some("must start with http:// or https://".to_string())
            }
            Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
                Some("has no host".to_string())
            }
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            let after = if url == *template {
                ""
            } else {
                " after interpolation"
            };
            let message = format!(
                "`http.url` \"{}\" {problem}{after}; write an absolute URL such as \
                 \"https://example.com/ping\"",
                template.escape_debug()
            );
            self.error(node, message);
            return None;
        }
        Some(CheckedUrl {
            url,
            template: template.clone(),
        })
    }

    /// `template` with `${VAR}` substituted, or `None` after reporting each problem.
    pub(super) fn interpolated(
        &mut self,
        key: &str,
        node: &Node,
        template: &str,
    ) -> Option<String> {
        match interpolate(template, &self.opts.env) {
            Ok(value) => Some(value),
            Err(problems) => {
                for problem in problems {
                    self.error(node, problem.message(key));
                }
                None
            }
        }
    }

    fn method(&mut self, node: &Node) -> Option<String> {
        if let NodeKind::Str(text) = &node.kind {
            let upper = text.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                return Some(upper);
            }
        }
        let message = format!(
            "`http.method` must be one of {}, not `{}`",
            list(METHODS),
            escaped(&self.text(node))
        );
        self.error(node, message);
        None
    }

    fn headers(&mut self, node: &Node) -> Option<Vec<(String, String)>> {
        if !matches!(node.kind, NodeKind::Map(_)) {
            let message = format!(
                "`http.headers` must be a mapping of header names to values, not {}; \
                 write e.g. `headers: {{ Authorization: \"Bearer ${{TOKEN}}\" }}`",
                node.describe()
            );
            self.error(node, message);
            return None;
        }
        let mut headers = Vec::new();
        let mut ok = true;
        for field in self.entries(node, "http.headers.", true) {
            let name = field.key.as_ref();
            let path = format!("http.headers.{}", escaped(name));
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                let message = format!(
                    "`{path}` is not a valid header name; use letters, digits and `-`, \
                     e.g. `X-Api-Key`"
                );
                self.error(field.key_node, message);
                ok = false;
                continue;
            }
            let Some(template) = field.value.scalar_text(self.src) else {
                let message = format!(
                    "`{path}` must be a string, not {}; write `{name}: \"value\"`",
                    field.value.describe()
                );
                self.error(field.value, message);
                ok = false;
                continue;
            };
            let Some(value) = self.interpolated(&path, field.value, &template) else {
                ok = false;
                continue;
            };
            // reqwest takes visible ASCII, space and tab. Say which, never the value.
            if !value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
                let after = if value == template {
                    ""
                } else {
                    " (after interpolation)"
                };
                let message = format!(
                    "`{path}` has a character that cannot be sent in an HTTP header{after}: \
                     only printable ASCII, spaces and tabs are allowed (no newlines); fix \
                     the value or the variables it uses"
                );
                self.error(field.value, message);
                ok = false;
                continue;
            }
            headers.push((name.to_string(), value));
        }
        ok.then_some(headers)
    }

    fn expect_status(&mut self, node: &Node) -> Option<Vec<u16>> {
        const HOW: &str = "write a status such as 200 or a list such as [200, 204]; leave \
                           it out to accept any 2xx";
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Int(_) => vec![node],
            NodeKind::Seq(items) if items.is_empty() => {
                self.error(
                    node,
                    format!("`http.expect_status` is an empty list; {HOW}"),
                );
                return None;
            }
            NodeKind::Seq(items) => items.iter().collect(),
            _ => {
                let message = format!(
                    "`http.expect_status` must be a number or a list of numbers, not {}; {HOW}",
                    node.describe()
                );
                self.error(node, message);
                return None;
            }
        };
        let mut statuses = Vec::with_capacity(items.len());
        for item in items {
            match item.kind {
                NodeKind::Int(status @ 100..=599) => {
                    statuses.push(u16::try_from(status).expect("100..=599 fits in u16"));
                }
                _ => {
                    let message = format!(
                        "`http.expect_status`: `{}` is not an HTTP status; statuses are \
                         whole numbers from 100 to 599",
                        escaped(&self.text(item))
                    );
                    self.error(item, message);
                }
            }
        }
        Some(statuses)
    }
}

/// HTTP token characters (RFC 9110 §5.6.2), the only ones a header name may use.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
