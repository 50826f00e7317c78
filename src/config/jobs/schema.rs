//! `chime schema`: a JSON Schema (draft 2020-12) of the schedule file format, built
//! from the loader's own key tables ([`TOP_KEYS`], [`JOB_KEYS`], [`HTTP_KEYS`],
//! [`HOOK_KEYS`], [`RETRY_KEYS`]), so that a key the loader learns is in the schema too. Each key's
//! type, description and example are in [`DOCS`]; a key without one is still accepted
//! (as anything), and a test insists that every key has one.

use serde_json::{Map, Value, json};

use super::hooks::HOOK_KEYS;
use super::http::{HTTP_KEYS, METHODS};
use super::keys::{JOB_KEYS, JOB_ONLY_KEYS, TOP_KEYS};
use super::retry::{MAX_ATTEMPTS, RETRY_KEYS};

/// A duration as `crate::duration::parse_duration` reads it.
const DURATION: &str = r"^\s*([0-9]+(ms|s|m|h|d))+\s*$";

/// What one key takes: its JSON Schema (without description), what it means, and an
/// example value (JSON).
struct Doc {
    key: &'static str,
    schema: fn() -> Value,
    description: &'static str,
    example: &'static str,
}

fn duration() -> Value {
    json!({"type": "string", "pattern": DURATION})
}

fn scalar() -> Value {
    json!({"type": ["string", "number", "boolean"]})
}

fn method() -> Value {
    // Any case, as the loader reads it.
    let alternatives: Vec<String> = METHODS
        .iter()
        .map(|method| {
            method
                .chars()
                .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
                .collect()
        })
        .collect();
    json!({"type": "string", "pattern": format!("^(?:{})$", alternatives.join("|"))})
}

/// Keys are named `key`, `http.key`, `hook.key` (the keys of `on_start`, `on_success`
/// and `on_failure` alike) or `retry.key`.
const DOCS: &[Doc] = &[
    Doc {
        key: "defaults",
        schema: || json!({"$ref": "#/$defs/defaults"}),
        description: "Settings every job of this file takes unless it sets its own: any job key but schedule, command and http.",
        example: r#"{"timezone": "Europe/Berlin", "timeout": "30m"}"#,
    },
    Doc {
        key: "jobs",
        schema: || json!({"type": "object", "additionalProperties": {"$ref": "#/$defs/job"}}),
        description: "The jobs, by name; a name is unique across every file loaded.",
        example: r#"{"nightly-backup": {"schedule": "30 2 * * *", "command": "/usr/local/bin/backup --full"}}"#,
    },
    Doc {
        key: "schedule",
        schema: || json!({"type": "string", "minLength": 1}),
        description: "When the job fires: five cron fields (minute hour day-of-month month day-of-week) or six with leading seconds; lists, ranges, steps, names, L, 5L, 1#2; @yearly @monthly @weekly @daily @hourly @reboot; @every DURATION.",
        example: r#""30 2 * * *""#,
    },
    Doc {
        key: "command",
        schema: || {
            json!({"oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}}
            ]})
        },
        description: "What a shell job runs: a string runs under /bin/sh -c, a list runs the program directly with those arguments. Exactly one of command and http.",
        example: r#""/usr/local/bin/backup --full""#,
    },
    Doc {
        key: "http",
        schema: || json!({"$ref": "#/$defs/http"}),
        description: "What an HTTP job calls. Exactly one of command and http.",
        example: r#"{"url": "https://hc.example.net/ping/${HC_UUID}", "method": "POST"}"#,
    },
    Doc {
        key: "timezone",
        schema: || json!({"type": "string", "minLength": 1}),
        description: "The IANA zone the schedule is read in (default: the file's defaults, else --default-timezone, else the system's zone).",
        example: r#""Europe/Berlin""#,
    },
    Doc {
        key: "workdir",
        schema: || json!({"type": "string", "pattern": "^/"}),
        description: "The absolute directory a shell job starts in.",
        example: r#""/var/backups""#,
    },
    Doc {
        key: "env",
        schema: || json!({"type": "object", "additionalProperties": scalar()}),
        description: "Variables added to a shell job's clean environment, by name.",
        example: r#"{"RCLONE_CONFIG": "/etc/rclone.conf"}"#,
    },
    Doc {
        key: "timeout",
        schema: duration,
        description: "How long each attempt may run before its process group is terminated (SIGTERM, then SIGKILL after kill_grace). Default: none.",
        example: r#""2h""#,
    },
    Doc {
        key: "kill_grace",
        schema: duration,
        description: "Time between SIGTERM and SIGKILL when a run is ended (timeout, replace, kill, shutdown). Default: 10s.",
        example: r#""10s""#,
    },
    Doc {
        key: "retry",
        schema: || json!({"$ref": "#/$defs/retry"}),
        description: "How often and how soon a failed run is tried again.",
        example: r#"{"attempts": 3, "delay": "1m", "max_delay": "10m"}"#,
    },
    Doc {
        key: "overlap",
        schema: || json!({"enum": ["skip", "allow", "replace"]}),
        description: "A fire while the job still runs: skip drops it (default), allow starts another run, replace ends the running one first.",
        example: r#""skip""#,
    },
    Doc {
        key: "starting_deadline",
        schema: duration,
        description: "A fire that cannot start within this long of its time (missed, or waiting for a slot) is counted missed instead of run late.",
        example: r#""5m""#,
    },
    Doc {
        key: "catch_up",
        schema: || json!({"enum": ["none", "latest"]}),
        description: "Fires missed while chime was down: none forgets them (default, as cron), latest runs the latest once.",
        example: r#""latest""#,
    },
    Doc {
        key: "on_owner_loss",
        schema: || json!({"enum": ["lost", "rerun"]}),
        description: "With --cluster, a run whose replica died (its lease ran out): lost records it as lost (default; shell jobs are rarely idempotent), rerun runs it once more on another replica.",
        example: r#""rerun""#,
    },
    Doc {
        key: "enabled",
        schema: || json!({"type": "boolean"}),
        description: "false keeps the job defined without firing it (chime trigger still runs it).",
        example: "true",
    },
    Doc {
        key: "user",
        schema: || json!({"type": ["string", "integer"], "minLength": 1, "minimum": 0}),
        description: "The account a shell job runs as (its uid, primary group, supplementary groups, HOME, USER, LOGNAME and SHELL); chime must run as root. HTTP jobs ignore it. Default: chime's own account.",
        example: r#""backup""#,
    },
    Doc {
        key: "group",
        schema: || json!({"type": ["string", "integer"], "minLength": 1, "minimum": 0}),
        description: "The primary group a shell job runs with, instead of the user's own; chime must run as root. HTTP jobs ignore it.",
        example: r#""backup""#,
    },
    Doc {
        key: "env_inherit",
        schema: || json!({"type": "boolean"}),
        description: "true passes the service's whole environment to a shell job (but systemd's NOTIFY_SOCKET, WATCHDOG_* and LISTEN_*) instead of the clean one; env still adds to it. Default: false.",
        example: "false",
    },
    Doc {
        key: "healthchecks",
        schema: || json!({"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}),
        description: "A healthchecks.io ping URL: chime sends /start?rid=RUN_ID when a run starts, then /EXIT_CODE (with the output's last 10 KiB) or /fail when it ends. ${VAR} comes from the service's environment; ${file:/path} and ${credential:NAME} read a secret. A failed ping is logged as hook.failed and never changes the run's outcome.",
        example: r#""https://hc-ping.com/${HC_UUID}""#,
    },
    Doc {
        key: "on_start",
        schema: || json!({"$ref": "#/$defs/hook"}),
        description: "An HTTP request sent when a run starts; ${CHIME_JOB}, ${CHIME_RUN_ID}, ${CHIME_SCHEDULED_AT} … in url, headers and body are the run's facts (${json:NAME} as a JSON string).",
        example: r#"{"url": "https://hooks.example.net/start?job=${CHIME_JOB}", "method": "POST"}"#,
    },
    Doc {
        key: "on_success",
        schema: || json!({"$ref": "#/$defs/hook"}),
        description: "An HTTP request sent when a run succeeds (after its retries), with the run's facts as ${CHIME_*}: ${CHIME_OUTCOME}, ${CHIME_EXIT_CODE}, ${CHIME_DURATION_MS}, ${CHIME_OUTPUT_TAIL} ….",
        example: r#"{"url": "https://hooks.example.net/ok/${CHIME_JOB}"}"#,
    },
    Doc {
        key: "on_failure",
        schema: || json!({"$ref": "#/$defs/hook"}),
        description: "An HTTP request sent when a run fails, times out, is killed or cancelled (after its retries), and with report_missed for fires that did not run; the run's facts as ${CHIME_*}.",
        example: r#"{"url": "https://ntfy.sh/chime-alerts", "method": "POST", "body": "${CHIME_JOB} ${CHIME_OUTCOME} (exit ${CHIME_EXIT_CODE})"}"#,
    },
    Doc {
        key: "report_missed",
        schema: || json!({"type": "boolean"}),
        description: "true reports fires that did not run (missed, or skipped but for disabled and paused jobs) through healthchecks (/fail) and on_failure, each with a fresh run id. Default: false.",
        example: "true",
    },
    Doc {
        key: "hook.url",
        schema: || json!({"type": "string", "minLength": 1}),
        description: "The URL to call (http:// or https://); ${VAR} from the service's environment, ${file:…}/${credential:…} secrets, and the run's facts as ${CHIME_*}.",
        example: r#""https://hooks.example.net/${CHIME_JOB}/${CHIME_OUTCOME}""#,
    },
    Doc {
        key: "hook.method",
        schema: method,
        description: "The HTTP method (default GET).",
        example: r#""POST""#,
    },
    Doc {
        key: "hook.headers",
        schema: || json!({"type": "object", "additionalProperties": scalar()}),
        description: "Request headers, by name; values take ${VAR}, secrets and ${CHIME_*} as the url does.",
        example: r#"{"Authorization": "Bearer ${HC_TOKEN}"}"#,
    },
    Doc {
        key: "hook.body",
        schema: scalar,
        description: "The request body; ${VAR}, secrets and ${CHIME_*} as in the url, ${json:NAME} as a JSON string literal.",
        example: r#""{\"job\": ${json:CHIME_JOB}, \"outcome\": ${json:CHIME_OUTCOME}}""#,
    },
    Doc {
        key: "hook.timeout",
        schema: duration,
        description: "How long each attempt of the request may take (default 10s).",
        example: r#""5s""#,
    },
    Doc {
        key: "hook.retry",
        schema: || json!({"$ref": "#/$defs/retry"}),
        description: "How often and how soon a failed request is tried again (default: one attempt, no retry); connection errors, 5xx and 429 are retried, other statuses are not.",
        example: r#"{"attempts": 3, "delay": "1s"}"#,
    },
    Doc {
        key: "http.url",
        schema: || json!({"type": "string", "minLength": 1}),
        description: "The URL to call; ${VAR} comes from the service's environment.",
        example: r#""https://hc.example.net/ping/${HC_UUID}""#,
    },
    Doc {
        key: "http.method",
        schema: method,
        description: "The HTTP method (default GET).",
        example: r#""POST""#,
    },
    Doc {
        key: "http.headers",
        schema: || json!({"type": "object", "additionalProperties": scalar()}),
        description: "Request headers, by name; ${VAR} in values comes from the service's environment.",
        example: r#"{"Authorization": "Bearer ${HC_TOKEN}"}"#,
    },
    Doc {
        key: "http.body",
        schema: scalar,
        description: "The request body; ${VAR} comes from the service's environment.",
        example: r#""{\"ok\": true}""#,
    },
    Doc {
        key: "http.expect_status",
        schema: || {
            json!({"oneOf": [
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 100, "maximum": 599}}
            ]})
        },
        description: "The statuses that mean success (default: any 2xx).",
        example: "[200, 204]",
    },
    Doc {
        key: "retry.attempts",
        schema: || json!({"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS}),
        description: "Attempts in all, the first included (default 1: no retry).",
        example: "3",
    },
    Doc {
        key: "retry.delay",
        schema: duration,
        description: "The delay before the second attempt; it doubles each time, with ±20 % jitter (default 10s).",
        example: r#""1m""#,
    },
    Doc {
        key: "retry.max_delay",
        schema: duration,
        description: "The cap on the delay between attempts (default 10m).",
        example: r#""10m""#,
    },
];

fn doc(key: &str) -> Option<&'static Doc> {
    DOCS.iter().find(|doc| doc.key == key)
}

/// The schema of one key: its type, description and example.
fn property(key: &str) -> Value {
    let Some(doc) = doc(key) else {
        return json!({"description": "(not documented yet)"});
    };
    let mut schema = match (doc.schema)() {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    schema.insert("description".into(), json!(doc.description));
    let example: Value = serde_json::from_str(doc.example).unwrap_or(Value::Null);
    schema.insert("examples".into(), json!([example]));
    Value::Object(schema)
}

fn object(keys: &[&str], prefix: &str) -> Map<String, Value> {
    let properties: Map<String, Value> = keys
        .iter()
        .map(|key| (key.to_string(), property(&format!("{prefix}{key}"))))
        .collect();
    let mut map = Map::new();
    map.insert("type".into(), json!("object"));
    map.insert("properties".into(), Value::Object(properties));
    map.insert("additionalProperties".into(), json!(false));
    map
}

/// The JSON Schema of a schedule file.
pub fn json_schema() -> Value {
    let mut job = object(JOB_KEYS, "");
    job.insert("required".into(), json!(["schedule"]));
    job.insert(
        "oneOf".into(),
        json!([{"required": ["command"]}, {"required": ["http"]}]),
    );
    let defaults_keys: Vec<&str> = JOB_KEYS
        .iter()
        .copied()
        .filter(|key| !JOB_ONLY_KEYS.contains(key))
        .collect();
    let mut http = object(HTTP_KEYS, "http.");
    http.insert("required".into(), json!(["url"]));
    let mut hook = object(HOOK_KEYS, "hook.");
    hook.insert("required".into(), json!(["url"]));
    let mut top = object(TOP_KEYS, "");
    top.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    top.insert("title".into(), json!("chime schedule file"));
    top.insert(
        "description".into(),
        json!("A schedule file of chime, the cron-style scheduler service: optional defaults, and jobs by name."),
    );
    top.insert(
        "$defs".into(),
        json!({
            "job": Value::Object(job),
            "defaults": Value::Object(object(&defaults_keys, "")),
            "http": Value::Object(http),
            "hook": Value::Object(hook),
            "retry": Value::Object(object(RETRY_KEYS, "retry.")),
        }),
    );
    Value::Object(top)
}

/// Every key the loader takes, as `key`, `http.key`, `hook.key` and `retry.key`, and each one's
/// example value (for tests that hold the schema and the loader to the same keys).
pub fn schema_keys() -> Vec<(String, Option<Value>)> {
    let job = JOB_KEYS.iter().map(|key| key.to_string());
    let http = HTTP_KEYS.iter().map(|key| format!("http.{key}"));
    let hook = HOOK_KEYS.iter().map(|key| format!("hook.{key}"));
    let retry = RETRY_KEYS.iter().map(|key| format!("retry.{key}"));
    TOP_KEYS
        .iter()
        .map(|key| key.to_string())
        .chain(job)
        .chain(http)
        .chain(hook)
        .chain(retry)
        .map(|key| {
            let example = doc(&key).and_then(|doc| serde_json::from_str(doc.example).ok());
            (key, example)
        })
        .collect()
}
