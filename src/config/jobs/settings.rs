//! The settings `defaults:` and jobs share (zone, workdir, env, timeouts, retry, overlap,
//! enabled): reading each one, the `defaults:` mapping, and a job's settings merged over
//! its file's defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::keys::{Entry, JOB_KEYS, JOB_ONLY_KEYS};
use super::retry::RetrySettings;
use super::{FileChecker, escaped};
use crate::account::Account;
use crate::config::ConfigWarning;
use crate::config::interpolate::is_var_name;
use crate::config::suggest::closest;
use crate::config::tree::{Node, NodeKind};
use crate::duration::parse_duration;
use crate::job::{CatchUp, Hook, Overlap, OwnerLoss, PingUrl, Pings};
use crate::zone::Zone;

const OVERLAPS: &[(&str, Overlap)] = &[
    ("skip", Overlap::Skip),
    ("allow", Overlap::Allow),
    ("replace", Overlap::Replace),
];

/// The settings `defaults` and jobs share; `None` means "not set here".
#[derive(Debug, Clone, Default)]
pub(super) struct Settings {
    pub(super) timezone: Option<Zone>,
    pub(super) workdir: Option<PathBuf>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) timeout: Option<Duration>,
    pub(super) kill_grace: Option<Duration>,
    pub(super) retry: RetrySettings,
    pub(super) overlap: Option<Overlap>,
    pub(super) starting_deadline: Option<Duration>,
    pub(super) catch_up: Option<CatchUp>,
    pub(super) on_owner_loss: Option<OwnerLoss>,
    pub(super) enabled: Option<bool>,
    /// `user:`'s account, looked up.
    pub(super) user: Option<Account>,
    /// `group:`'s name and gid, looked up.
    pub(super) group: Option<(String, u32)>,
    pub(super) env_inherit: Option<bool>,
    pub(super) healthchecks: Option<PingUrl>,
    pub(super) on_start: Option<Hook>,
    pub(super) on_success: Option<Hook>,
    pub(super) on_failure: Option<Hook>,
    pub(super) report_missed: Option<bool>,
}

impl Settings {
    /// A job's own settings over its file's defaults (`env` and `retry` key by key).
    pub(super) fn over(self, defaults: &Settings) -> Settings {
        let mut env = defaults.env.clone();
        env.extend(self.env);
        Settings {
            timezone: self.timezone.or(defaults.timezone),
            workdir: self.workdir.or_else(|| defaults.workdir.clone()),
            env,
            timeout: self.timeout.or(defaults.timeout),
            kill_grace: self.kill_grace.or(defaults.kill_grace),
            retry: self.retry.over(&defaults.retry),
            overlap: self.overlap.or(defaults.overlap),
            starting_deadline: self.starting_deadline.or(defaults.starting_deadline),
            catch_up: self.catch_up.or(defaults.catch_up),
            on_owner_loss: self.on_owner_loss.or(defaults.on_owner_loss),
            enabled: self.enabled.or(defaults.enabled),
            user: self.user.or_else(|| defaults.user.clone()),
            group: self.group.or_else(|| defaults.group.clone()),
            env_inherit: self.env_inherit.or(defaults.env_inherit),
            healthchecks: self.healthchecks.or_else(|| defaults.healthchecks.clone()),
            on_start: self.on_start.or_else(|| defaults.on_start.clone()),
            on_success: self.on_success.or_else(|| defaults.on_success.clone()),
            on_failure: self.on_failure.or_else(|| defaults.on_failure.clone()),
            report_missed: self.report_missed.or(defaults.report_missed),
        }
    }

    /// The job's pings, if it has any.
    pub(super) fn pings(&self) -> Option<Arc<Pings>> {
        let pings = Pings {
            healthchecks: self.healthchecks.clone(),
            on_start: self.on_start.clone(),
            on_success: self.on_success.clone(),
            on_failure: self.on_failure.clone(),
            report_missed: self.report_missed.unwrap_or(false),
        };
        (pings != Pings::default()).then(|| Arc::new(pings))
    }
}

impl FileChecker<'_, '_> {
    pub(super) fn defaults(&mut self, node: &Node) -> Settings {
        let mut settings = Settings::default();
        match &node.kind {
            NodeKind::Map(_) => {}
            NodeKind::Null => return settings,
            _ => {
                let message = format!(
                    "`defaults` must be a mapping of settings such as `timezone` and \
                     `timeout`, not {}",
                    node.describe()
                );
                self.error(node, message);
                return settings;
            }
        }
        for entry in self.entries(node, "defaults.", true) {
            let key = entry.key.as_ref();
            if JOB_ONLY_KEYS.contains(&key) {
                let message = format!(
                    "`{key}` cannot be a default: `defaults` takes every job key but \
                     `schedule`, `command` and `http`; set `{key}` on each job"
                );
                self.error(entry.key_node, message);
            } else if !self.setting(&entry, &mut settings, "defaults.") {
                let valid: Vec<&str> = JOB_KEYS
                    .iter()
                    .copied()
                    .filter(|key| !JOB_ONLY_KEYS.contains(key))
                    .collect();
                self.unknown_key(&entry, "defaults.", &valid, "`defaults`");
            }
        }
        settings
    }

    /// Reads one of the keys `defaults` and jobs share; `false` if `entry` is none.
    pub(super) fn setting(
        &mut self,
        entry: &Entry<'_>,
        settings: &mut Settings,
        prefix: &str,
    ) -> bool {
        let key = entry.key.as_ref();
        let path = || format!("{prefix}{key}");
        let value = entry.value;
        match key {
            "timezone" => settings.timezone = self.timezone(&path(), value),
            "workdir" => settings.workdir = self.workdir(&path(), value),
            "env" => settings.env = self.env(&path(), value),
            "timeout" => {
                settings.timeout = self.duration(&path(), value, Some("leave it out for no limit"));
            }
            "kill_grace" => {
                settings.kill_grace =
                    self.duration(&path(), value, Some("leave it out for the default of 10s"));
            }
            "starting_deadline" => {
                settings.starting_deadline =
                    self.duration(&path(), value, Some("leave it out for no deadline"));
            }
            "retry" => settings.retry = self.retry(&path(), value, !prefix.is_empty()),
            "overlap" => settings.overlap = self.overlap(&path(), value),
            "catch_up" => settings.catch_up = self.catch_up(&path(), value),
            "on_owner_loss" => settings.on_owner_loss = self.on_owner_loss(&path(), value),
            "enabled" => settings.enabled = self.boolean(&path(), value),
            "env_inherit" => settings.env_inherit = self.boolean(&path(), value),
            "user" => {
                settings.user = self.account_name(&path(), value).and_then(|name| {
                    self.looked_up(value, crate::account::user(&name), "getent passwd")
                });
            }
            "group" => {
                settings.group = self.account_name(&path(), value).and_then(|name| {
                    let gid =
                        self.looked_up(value, crate::account::group(&name), "getent group")?;
                    Some((name, gid))
                });
            }
            "report_missed" => settings.report_missed = self.boolean(&path(), value),
            "healthchecks" => settings.healthchecks = self.healthchecks(&path(), value),
            "on_start" => settings.on_start = self.hook(&path(), value, !prefix.is_empty()),
            "on_success" => settings.on_success = self.hook(&path(), value, !prefix.is_empty()),
            "on_failure" => settings.on_failure = self.hook(&path(), value, !prefix.is_empty()),
            _ => return false,
        }
        true
    }

    /// The name given to `user` or `group`, if the service may use it: only root can
    /// start a process as someone else, so as non-root this is an error (a warning in
    /// `chime check`, which cannot know how the service will run).
    fn account_name(&mut self, path: &str, node: &Node) -> Option<String> {
        let name = match &node.kind {
            NodeKind::Str(_) | NodeKind::Int(_) => self.text(node).into_owned(),
            _ => {
                let message = format!(
                    "`{path}` must be the name of an account, not {}; write e.g. \
                     `{path}: backup`",
                    node.describe()
                );
                self.error(node, message);
                return None;
            }
        };
        let privileges = self.opts.privileges;
        if privileges.euid != 0 {
            let message = format!(
                "`{path}` needs chime to run as root, to start the job as another \
                 account, but it runs as uid {}; run the service as root (see \
                 systemd/chime-root.service) or remove `{path}`",
                privileges.euid
            );
            if privileges.check_only {
                let location = self.location(node);
                self.out.warnings.push(ConfigWarning {
                    location,
                    message: format!("{message} (`chime run` refuses it)"),
                });
            } else {
                self.error(node, message);
                return None;
            }
        }
        Some(name)
    }

    /// The account or group looked up; an error at `node` if there is none.
    fn looked_up<T>(&mut self, node: &Node, found: Result<T, String>, list: &str) -> Option<T> {
        found
            .map_err(|reason| {
                let message =
                    format!("{reason}; name an existing one (`{list}` lists them) or create it");
                self.error(node, message);
            })
            .ok()
    }

    fn workdir(&mut self, path: &str, node: &Node) -> Option<PathBuf> {
        let not = match &node.kind {
            NodeKind::Str(dir) if dir.starts_with('/') && !dir.contains('\0') => {
                return Some(PathBuf::from(dir));
            }
            NodeKind::Str(dir) if dir.contains('\0') => "a path with a NUL character".to_string(),
            NodeKind::Str(dir) if dir.is_empty() => "empty".to_string(),
            NodeKind::Str(dir) => format!("the relative path `{}`", escaped(dir)),
            _ => node.describe().to_string(),
        };
        let message = format!(
            "`{path}` must be an absolute path (starting with `/`), not {not}; write the \
             full path, e.g. `/var/lib/backup`"
        );
        self.error(node, message);
        None
    }

    fn env(&mut self, path: &str, node: &Node) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if !matches!(node.kind, NodeKind::Map(_)) {
            let message = format!(
                "`{path}` must be a mapping of variable names to values, not {}; write \
                 e.g. `{path}: {{ RCLONE_CONFIG: /etc/rclone.conf }}`",
                node.describe()
            );
            self.error(node, message);
            return env;
        }
        let prefix = format!("{path}.");
        for field in self.entries(node, &prefix, true) {
            let name = field.key.as_ref();
            if !is_var_name(name) {
                let message = format!(
                    "`{path}`: `{}` is not a valid variable name; use letters, digits and \
                     `_`, not starting with a digit",
                    escaped(name)
                );
                self.error(field.key_node, message);
                continue;
            }
            // Numbers and booleans are taken as written: `PORT: 8080` means "8080".
            match field.value.scalar_text(self.src) {
                Some(value) if value.contains('\0') => {
                    let message = format!(
                        "`{path}.{name}` contains a NUL character, which no environment \
                         variable can hold; remove it"
                    );
                    self.error(field.value, message);
                }
                // `${VAR}`, `${file:…}` and `${credential:…}` as in `http`; the
                // value may hold a secret, so only the template is ever shown.
                Some(value) => {
                    let key = format!("{path}.{name}");
                    if let Some(value) = self.interpolated(&key, field.value, &value) {
                        env.insert(name.to_string(), value);
                    }
                }
                None if matches!(field.value.kind, NodeKind::Null) => {
                    let message = format!(
                        "`{path}.{name}` has no value; write `{name}: \"\"` for an empty \
                         value, or remove it"
                    );
                    self.error(field.value, message);
                }
                None => {
                    let message = format!(
                        "`{path}.{name}` must be a string, not {}; write `{name}: \"value\"`",
                        field.value.describe()
                    );
                    self.error(field.value, message);
                }
            }
        }
        env
    }

    /// A duration; `positive` (with its hint) rejects zero.
    pub(super) fn duration(
        &mut self,
        path: &str,
        node: &Node,
        positive: Option<&str>,
    ) -> Option<Duration> {
        const HOW: &str = "write a number with a unit, e.g. 500ms, 90s, 5m, 1h30m or 2d";
        let message = match &node.kind {
            NodeKind::Str(text) => match parse_duration(text) {
                Ok(duration) if duration.is_zero() && positive.is_some() => format!(
                    "`{path}` must be longer than zero; {}",
                    positive.unwrap_or_default()
                ),
                Ok(duration) => return Some(duration),
                Err(err) => format!("`{path}`: {err}"),
            },
            NodeKind::Int(_) => {
                let number = self.text(node);
                format!(
                    "`{path}` is a bare number `{number}`; add a unit, e.g. `{number}s` or \
                     `{number}m` (units: ms, s, m, h, d)"
                )
            }
            NodeKind::Null => format!("`{path}` is empty; {HOW}"),
            _ => format!(
                "`{path}` must be a duration, not {} `{}`; {HOW}",
                node.describe(),
                escaped(&self.text(node))
            ),
        };
        self.error(node, message);
        None
    }

    fn on_owner_loss(&mut self, path: &str, node: &Node) -> Option<OwnerLoss> {
        match &node.kind {
            NodeKind::Str(text) if text == "lost" => Some(OwnerLoss::Lost),
            NodeKind::Str(text) if text == "rerun" => Some(OwnerLoss::Rerun),
            _ => {
                let text = self.text(node);
                let message = format!(
                    "`{path}` must be lost or rerun, not `{}`; rerun runs a run whose replica died once more on another (with --cluster)",
                    escaped(&text)
                );
                self.error(node, message);
                None
            }
        }
    }

    fn catch_up(&mut self, path: &str, node: &Node) -> Option<CatchUp> {
        match &node.kind {
            NodeKind::Str(text) if text == "none" => Some(CatchUp::None),
            NodeKind::Str(text) if text == "latest" => Some(CatchUp::Latest),
            _ => {
                let text = self.text(node);
                let message = format!(
                    "`{path}` must be none or latest, not `{}`; latest runs the latest fire missed while chime was down, once",
                    escaped(&text)
                );
                self.error(node, message);
                None
            }
        }
    }

    fn overlap(&mut self, path: &str, node: &Node) -> Option<Overlap> {
        if let NodeKind::Str(text) = &node.kind
            && let Some((_, overlap)) = OVERLAPS.iter().find(|(name, _)| name == text)
        {
            return Some(*overlap);
        }
        let text = self.text(node);
        let names = OVERLAPS.iter().map(|(name, _)| *name);
        let hint = match closest(&text, names, 2) {
            Some(name) => format!("; did you mean `{name}`?"),
            None => String::new(),
        };
        let message = format!(
            "`{path}` must be skip, allow or replace, not `{}`{hint}",
            escaped(&text)
        );
        self.error(node, message);
        None
    }
}
