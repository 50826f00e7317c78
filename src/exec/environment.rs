//! The environment a shell job starts with.
//!
//! By default a clean one, as cron gives (README, "Running as root"): `PATH` (the
//! default below unless the job's `env` sets it), `HOME`, `LOGNAME`, `USER` and `SHELL`
//! of the account the job runs as, the service's `LANG` and `LC_*`, `TZ` naming the
//! job's zone, the job's own `env`, and the `CHIME_*` values. Nothing else of the
//! service's environment reaches the job: variables that feed `${VAR}` secrets into
//! HTTP headers stay with the service.
//!
//! `env_inherit: true` starts from the service's whole environment instead (what chime
//! did before), still without what systemd meant for the service alone.

use std::ffi::{OsStr, OsString};
use std::sync::OnceLock;

use super::Attempt;
use crate::account::{self, Account};
use crate::events::rfc3339;
use crate::zone::Zone;

/// `PATH` of a job that sets none: cron's, with the `sbin` directories root needs.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment variables systemd hands to the service itself. A job inheriting
/// them could notify or claim sockets on the service's behalf.
const SERVICE_ONLY_VARS: &[&str] = &["NOTIFY_SOCKET"];
const SERVICE_ONLY_PREFIXES: &[&str] = &["WATCHDOG_", "LISTEN_"];

/// The job's whole environment for this attempt, from the service's (`service`, e.g.
/// `std::env::vars_os()`): the list to hand to a command after clearing its own.
pub fn for_attempt(
    attempt: &Attempt,
    service: impl Iterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let job = &attempt.job;
    let run_as = job.run_as.as_ref().and_then(|run_as| run_as.user.as_ref());
    let mut env: Vec<(OsString, OsString)> = if job.env_inherit {
        service.filter(|(key, _)| !service_only(key)).collect()
    } else {
        let mut env: Vec<(OsString, OsString)> = service.filter(|(key, _)| locale(key)).collect();
        env.push(("PATH".into(), DEFAULT_PATH.into()));
        if let Some(zone) = tz_value(job.timezone) {
            env.push(("TZ".into(), zone.into()));
        }
        // chime's own account when the job names none; if chime's uid has no account
        // (a container's arbitrary uid), the job gets no HOME/USER rather than a guess.
        if run_as.is_none()
            && let Some(own) = own_account()
        {
            push_account(&mut env, own);
        }
        env
    };
    if let Some(account) = run_as {
        push_account(&mut env, account);
    }
    let chime = [
        ("CHIME_JOB", job.name.clone()),
        ("CHIME_RUN_ID", attempt.run_id.to_string()),
        ("CHIME_SCHEDULED_AT", rfc3339(attempt.scheduled_at)),
        ("CHIME_ATTEMPT", attempt.attempt.to_string()),
    ];
    // The job's `env` may override anything but the `CHIME_*` values: the run's
    // identity must be trustworthy.
    let overrides = job
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .chain(chime);
    for (key, value) in overrides {
        set(&mut env, key, value);
    }
    env
}

fn push_account(env: &mut Vec<(OsString, OsString)>, account: &Account) {
    set(env, "HOME", account.home.clone());
    set(env, "LOGNAME", account.name.clone());
    set(env, "USER", account.name.clone());
    set(env, "SHELL", account.shell.clone());
}

fn set(env: &mut Vec<(OsString, OsString)>, key: &str, value: impl Into<OsString>) {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
}

/// chime's own account, looked up once: it does not change while the service runs.
fn own_account() -> Option<&'static Account> {
    static OWN: OnceLock<Option<Account>> = OnceLock::new();
    OWN.get_or_init(|| account::user_by_uid(account::effective_uid()))
        .as_ref()
}

/// `TZ` for the job's zone: its IANA name. A zone read from a file or a POSIX rule
/// (only the system's or `--default-timezone` can be one) leaves `TZ` unset, so the
/// job sees the system's zone as the C library finds it.
fn tz_value(zone: Zone) -> Option<String> {
    match zone {
        Zone::Iana(tz) => Some(tz.name().to_string()),
        Zone::Rules(_) => None,
    }
}

fn locale(key: &OsStr) -> bool {
    let key = key.as_encoded_bytes();
    key == b"LANG" || key.starts_with(b"LC_")
}

fn service_only(key: &OsStr) -> bool {
    let key = key.as_encoded_bytes();
    SERVICE_ONLY_VARS.iter().any(|v| key == v.as_bytes())
        || SERVICE_ONLY_PREFIXES
            .iter()
            .any(|p| key.starts_with(p.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use crate::job::{Action, Job, RunAs, ShellCommand};

    fn attempt(env: &[(&str, &str)], inherit: bool, run_as: Option<RunAs>) -> Attempt {
        let job = Job {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            env_inherit: inherit,
            run_as,
            timezone: Zone::Iana(chrono_tz::Europe::Berlin),
            kill_grace: Duration::from_secs(1),
            ..Job::new(
                "backup",
                "* * * * *",
                Action::Shell(ShellCommand::Script("true".into())),
            )
            .unwrap()
        };
        Attempt {
            job: Arc::new(job),
            run_id: "r1".into(),
            scheduled_at: "2024-03-01T02:03:04.5Z".parse().unwrap(),
            attempt: 2,
            deadline: None,
            cancel: CancellationToken::new(),
        }
    }

    fn service() -> impl Iterator<Item = (OsString, OsString)> {
        [
            ("PATH", "/bin"),
            ("NOTIFY_SOCKET", "/run/notify"),
            ("WATCHDOG_USEC", "1000"),
            ("WATCHDOG_PID", "1"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_PID", "1"),
            ("LISTEN_FDNAMES", "a:b"),
            ("LISTENER", "kept: not a systemd variable"),
            ("HOME", "/root"),
            ("HC_TOKEN", "s3cret"),
            ("LANG", "de_DE.UTF-8"),
            ("LC_TIME", "C"),
            ("CHIME_RUN_ID", "spoofed"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .into_iter()
    }

    fn map(env: Vec<(OsString, OsString)>) -> BTreeMap<String, String> {
        let len = env.len();
        let map: BTreeMap<String, String> = env
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        assert_eq!(map.len(), len, "a variable is set twice");
        map
    }

    fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn nobody() -> Account {
        Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: "/nonexistent".into(),
            shell: "/usr/sbin/nologin".into(),
        }
    }

    #[test]
    fn a_clean_environment_holds_only_what_the_job_is_given() {
        let run_as = RunAs {
            user: Some(nobody()),
            group: None,
        };
        let attempt = attempt(&[("X", "1"), ("CHIME_JOB", "spoofed")], false, Some(run_as));
        assert_eq!(
            map(for_attempt(&attempt, service())),
            expected(&[
                ("PATH", DEFAULT_PATH),
                ("TZ", "Europe/Berlin"),
                ("LANG", "de_DE.UTF-8"),
                ("LC_TIME", "C"),
                ("HOME", "/nonexistent"),
                ("LOGNAME", "nobody"),
                ("USER", "nobody"),
                ("SHELL", "/usr/sbin/nologin"),
                ("X", "1"),
                ("CHIME_JOB", "backup"),
                ("CHIME_RUN_ID", "r1"),
                ("CHIME_SCHEDULED_AT", "2024-03-01T02:03:04.500Z"),
                ("CHIME_ATTEMPT", "2"),
            ])
        );
    }

    #[test]
    fn without_user_the_account_is_chimes_own_and_env_sets_path() {
        let attempt = attempt(&[("PATH", "/opt/bin")], false, None);
        let env = map(for_attempt(&attempt, service()));
        let own = own_account().expect("the test's uid has an account");
        assert_eq!(env["PATH"], "/opt/bin");
        assert_eq!(env["USER"], own.name);
        assert_eq!(env["HOME"], own.home.display().to_string());
        assert!(!env.contains_key("HC_TOKEN") && !env.contains_key("LISTENER"));
    }

    #[test]
    fn inherit_keeps_the_service_environment_but_not_systemds_variables() {
        let attempt = attempt(&[("HOME", "/srv"), ("CHIME_JOB", "spoofed")], true, None);
        assert_eq!(
            map(for_attempt(&attempt, service())),
            expected(&[
                ("PATH", "/bin"),
                ("LISTENER", "kept: not a systemd variable"),
                ("HOME", "/srv"),
                ("HC_TOKEN", "s3cret"),
                ("LANG", "de_DE.UTF-8"),
                ("LC_TIME", "C"),
                ("CHIME_JOB", "backup"),
                ("CHIME_RUN_ID", "r1"),
                ("CHIME_SCHEDULED_AT", "2024-03-01T02:03:04.500Z"),
                ("CHIME_ATTEMPT", "2"),
            ])
        );
    }

    /// Names drawn from a small set, so that collisions between the service's
    /// variables, the job's `env` and the fixed ones are common.
    const NAMES: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TZ",
        "LANG",
        "LC_ALL",
        "LC_TIME",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "LISTEN_FDS",
        "LISTENER",
        "CHIME_JOB",
        "CHIME_ATTEMPT",
        "TOKEN",
        "X",
    ];

    proptest::proptest! {
        /// Against a plain model: the service's variables that a clean environment
        /// keeps (LANG, LC_*) or an inherited one keeps (all but systemd's), then the
        /// fixed ones, then the job's `env`, then `CHIME_*`; each name once.
        #[test]
        fn the_environment_matches_a_plain_model(
            service_vars in proptest::collection::vec((0..NAMES.len(), "[a-z]{0,3}"), 0..12),
            job_vars in proptest::collection::vec((0..NAMES.len(), "[a-z]{0,3}"), 0..6),
            inherit: bool,
            as_nobody: bool,
        ) {
            // An environment holds each name once.
            let service_vars: BTreeMap<String, String> = service_vars
                .into_iter()
                .map(|(i, v)| (NAMES[i].to_string(), v))
                .collect();
            let job_vars: Vec<(&str, String)> =
                job_vars.into_iter().map(|(i, v)| (NAMES[i], v)).collect();
            let pairs: Vec<(&str, &str)> =
                job_vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let run_as = as_nobody.then(|| RunAs { user: Some(nobody()), group: None });
            let attempt = attempt(&pairs, inherit, run_as);
            let got = map(for_attempt(
                &attempt,
                service_vars.iter().map(|(k, v)| (k.into(), v.into())),
            ));

            let mut model: BTreeMap<String, String> = BTreeMap::new();
            for (key, value) in &service_vars {
                let systemd = key == "NOTIFY_SOCKET"
                    || key.starts_with("WATCHDOG_")
                    || key.starts_with("LISTEN_");
                let locale = key == "LANG" || key.starts_with("LC_");
                if (inherit && !systemd) || (!inherit && locale) {
                    model.insert(key.clone(), value.clone());
                }
            }
            if !inherit {
                model.insert("PATH".into(), DEFAULT_PATH.into());
                model.insert("TZ".into(), "Europe/Berlin".into());
            }
            let account = if as_nobody { Some(nobody()) } else if inherit { None } else {
                own_account().cloned()
            };
            if let Some(account) = account {
                model.insert("HOME".into(), account.home.display().to_string());
                model.insert("LOGNAME".into(), account.name.clone());
                model.insert("USER".into(), account.name.clone());
                model.insert("SHELL".into(), account.shell.display().to_string());
            }
            // The job's `env` is a map: the last value given for a name is the one kept.
            let job_env: BTreeMap<&str, &str> = pairs.iter().copied().collect();
            for (key, value) in job_env {
                model.insert(key.into(), value.into());
            }
            for (key, value) in [
                ("CHIME_JOB", "backup"),
                ("CHIME_RUN_ID", "r1"),
                ("CHIME_SCHEDULED_AT", "2024-03-01T02:03:04.500Z"),
                ("CHIME_ATTEMPT", "2"),
            ] {
                model.insert(key.into(), value.into());
            }
            proptest::prop_assert_eq!(got, model);
        }
    }
}
