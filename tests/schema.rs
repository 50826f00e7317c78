//! `chime schema`: the JSON Schema of the schedule file format, held to the loader.
//! Every example in `schedules/` validates; files wrong in structure fail both the
//! schema and `chime check`; every key the loader takes is in the schema, with a
//! description and an example, and every key of the schema is one the loader takes.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// `chime schema`, parsed.
fn schema() -> Value {
    let dir = support::temp_dir();
    let out = support::run(dir.path(), ["schema"], LIMIT);
    assert_eq!(out.code, Some(0), "{out:#?}");
    serde_json::from_str(&out.stdout).expect("chime schema prints JSON")
}

fn validator(schema: &Value) -> (boon::Schemas, boon::SchemaIndex) {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource("chime-schedule.json", schema.clone())
        .expect("the schema is a resource");
    let index = compiler
        .compile("chime-schedule.json", &mut schemas)
        .expect("the schema compiles as draft 2020-12");
    (schemas, index)
}

/// A YAML document as an editor's language server reads it: YAML 1.2, where `yes` is
/// a string, not a boolean.
fn yaml(text: &str) -> Value {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(text, options)
        .unwrap_or_else(|e| panic!("YAML: {e}\n{text}"))
}

fn valid(validator: &(boon::Schemas, boon::SchemaIndex), document: &Value) -> Result<(), String> {
    validator
        .0
        .validate(document, validator.1)
        .map_err(|e| format!("{e:#}"))
}

/// `chime check` on one file: its exit code and stderr.
fn check(text: &str) -> (Option<i32>, String) {
    let dir = support::temp_dir();
    let file = support::write(dir.path(), "jobs.yaml", text);
    let out = support::command(dir.path(), [Path::new("check"), file.as_path()])
        .env("HC_UUID", "abc")
        .env("HC_TOKEN", "t")
        .run(LIMIT);
    (out.code, out.stderr)
}

#[test]
fn the_schema_is_draft_2020_12_with_enums_for_overlap_and_catch_up() {
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let job = &schema["$defs"]["job"]["properties"];
    assert_eq!(
        job["overlap"]["enum"],
        serde_json::json!(["skip", "allow", "replace"])
    );
    assert_eq!(
        job["catch_up"]["enum"],
        serde_json::json!(["none", "latest"])
    );
    validator(&schema);
}

#[test]
fn every_example_schedule_validates() {
    let validator = validator(&schema());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("schedules/ exists") {
        let path = entry.expect("a directory entry").path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        if let Err(error) = valid(&validator, &yaml(&text)) {
            panic!("{} fails the schema:\n{error}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} files in schedules/");
}

/// Files wrong in structure (not in value: a cron expression or a zone the schema
/// cannot judge): each is refused by `chime check`, and by the schema.
const WRONG: &[(&str, &str)] = &[
    (
        "unknown job key",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    colour: red\n",
    ),
    (
        "misspelt key",
        "jobs:\n  a:\n    shedule: '@daily'\n    command: x\n",
    ),
    (
        "unknown top-level key",
        "jobz:\n  a:\n    schedule: '@daily'\n    command: x\n",
    ),
    ("no schedule", "jobs:\n  a:\n    command: x\n"),
    (
        "neither command nor http",
        "jobs:\n  a:\n    schedule: '@daily'\n",
    ),
    (
        "both command and http",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    http: { url: 'http://127.0.0.1/' }\n",
    ),
    (
        "overlap not in its enum",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    overlap: queue\n",
    ),
    (
        "catch_up not in its enum",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    catch_up: all\n",
    ),
    (
        "enabled not a boolean",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    enabled: yes\n",
    ),
    (
        "timeout a bare number",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    timeout: 30\n",
    ),
    (
        "timeout without a unit",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    timeout: '30'\n",
    ),
    (
        "retry attempts zero",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    retry: { attempts: 0 }\n",
    ),
    (
        "retry key misspelt",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    retry: { atempts: 3 }\n",
    ),
    (
        "http without url",
        "jobs:\n  a:\n    schedule: '@daily'\n    http: { method: GET }\n",
    ),
    (
        "http method unknown",
        "jobs:\n  a:\n    schedule: '@daily'\n    http: { url: 'http://127.0.0.1/', method: FETCH }\n",
    ),
    (
        "expect_status out of range",
        "jobs:\n  a:\n    schedule: '@daily'\n    http: { url: 'http://127.0.0.1/', expect_status: [42] }\n",
    ),
    (
        "command an empty list",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: []\n",
    ),
    (
        "workdir relative",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    workdir: tmp\n",
    ),
    (
        "env a list",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    env: [A, B]\n",
    ),
    (
        "schedule in defaults",
        "defaults:\n  schedule: '@daily'\njobs:\n  a:\n    schedule: '@daily'\n    command: x\n",
    ),
    (
        "hook without url",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    on_failure: { method: POST }\n",
    ),
    (
        "hook key misspelt",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    on_start: { url: 'http://127.0.0.1/', bdy: x }\n",
    ),
    (
        "hook a string",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    on_success: 'http://127.0.0.1/'\n",
    ),
    (
        "jobs a list",
        "jobs:\n  - schedule: '@daily'\n    command: x\n",
    ),
];

#[test]
fn files_wrong_in_structure_fail_the_schema_and_the_loader() {
    let validator = validator(&schema());
    for (what, text) in WRONG {
        let (code, stderr) = check(text);
        assert_eq!(code, Some(1), "{what}: chime check accepted it\n{stderr}");
        assert!(
            valid(&validator, &yaml(text)).is_err(),
            "{what}: the schema accepts what the loader refuses:\n{text}\nloader: {stderr}"
        );
    }
}

/// Where the schema keeps the keys of each level.
fn schema_properties(schema: &Value, level: &str) -> BTreeSet<String> {
    let object = match level {
        "top" => &schema["properties"],
        other => &schema["$defs"][other]["properties"],
    };
    object
        .as_object()
        .unwrap_or_else(|| panic!("no properties for {level}"))
        .keys()
        .cloned()
        .collect()
}

/// The keys the loader takes at a level, as its error for an unknown key lists them
/// ("a job takes `schedule`, `command`, …").
fn loader_keys(file: &str, takes: &str) -> BTreeSet<String> {
    let (code, stderr) = check(file);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.contains(takes))
        .unwrap_or_else(|| panic!("no `{takes}` in:\n{stderr}"));
    let list = &line[line.find(takes).expect("found") + takes.len()..];
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_loader_and_the_schema_take_the_same_keys_both_ways() {
    let schema = schema();
    let bogus = "qqqqqqqqqq";
    let levels = [
        (
            "top",
            format!("{bogus}: 1\njobs: {{}}\n"),
            "the top level takes ",
        ),
        (
            "job",
            format!("jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    {bogus}: 1\n"),
            "a job takes ",
        ),
        (
            "defaults",
            format!("defaults:\n  {bogus}: 1\njobs: {{}}\n"),
            "`defaults` takes ",
        ),
        (
            "http",
            format!(
                "jobs:\n  a:\n    schedule: '@daily'\n    http: {{ url: 'http://127.0.0.1/', {bogus}: 1 }}\n"
            ),
            "`http` takes ",
        ),
        (
            "retry",
            format!(
                "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    retry: {{ {bogus}: 1 }}\n"
            ),
            "`retry` takes ",
        ),
        (
            "hook",
            format!(
                "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    on_failure: {{ url: 'http://127.0.0.1/', {bogus}: 1 }}\n"
            ),
            "`on_failure` takes ",
        ),
    ];
    for (level, file, takes) in levels {
        let loader = loader_keys(&file, takes);
        let in_schema = schema_properties(&schema, level);
        let missing: Vec<_> = loader.difference(&in_schema).collect();
        let extra: Vec<_> = in_schema.difference(&loader).collect();
        assert!(
            missing.is_empty(),
            "{level}: the loader takes {missing:?}, the schema does not have them"
        );
        assert!(
            extra.is_empty(),
            "{level}: the schema has {extra:?}, the loader refuses them"
        );
    }
}

#[test]
fn every_key_has_a_description_and_an_example_the_loader_and_schema_accept() {
    let schema = schema();
    let validator = validator(&schema);
    for (level, path) in [
        ("job", ""),
        ("http", "http."),
        ("hook", "hook."),
        ("retry", "retry."),
    ] {
        for key in schema_properties(&schema, level) {
            let property = &schema["$defs"][level]["properties"][&key];
            let description = property["description"].as_str().unwrap_or("");
            assert!(
                !description.is_empty() && !description.contains("not documented"),
                "{path}{key} has no description"
            );
            let example = property["examples"][0].clone();
            assert!(!example.is_null(), "{path}{key} has no example");
            // The example, in a job of its own.
            let mut job = serde_json::json!({"schedule": "@daily", "command": "true"});
            match level {
                "job" => {
                    if key == "http" {
                        job.as_object_mut().expect("an object").remove("command");
                    }
                    job[&key] = example;
                }
                "http" => {
                    job.as_object_mut().expect("an object").remove("command");
                    job["http"] = serde_json::json!({"url": "http://127.0.0.1/"});
                    job["http"][&key] = example;
                }
                "hook" => {
                    job["on_failure"] = serde_json::json!({"url": "http://127.0.0.1/"});
                    job["on_failure"][&key] = example;
                }
                _ => job["retry"] = serde_json::json!({ key.as_str(): example }),
            }
            let file = serde_json::json!({"jobs": {"a": job}});
            // JSON is YAML: the loader reads the same document.
            let text = serde_json::to_string_pretty(&file).expect("JSON");
            let (code, stderr) = check(&text);
            assert_eq!(
                code,
                Some(0),
                "{path}{key}'s example: the loader refuses\n{text}\n{stderr}"
            );
            if let Err(error) = valid(&validator, &file) {
                panic!("{path}{key}'s example fails the schema: {error}\n{text}");
            }
        }
    }
}
