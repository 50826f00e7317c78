//! The README's recipes, checked against the examples they refer to (issue 12: the
//! JSON recipe for output filtered on a job name no example had).

mod support;

use std::path::Path;

use chime::config::{LoadOptions, load};
use chime::zone::Zone;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// Names after `prefix` up to the next character that cannot be in a job name.
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn every_job_a_recipe_names_is_an_example_job() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let options = LoadOptions {
        default_timezone: Zone::UTC,
        env: Default::default(),
        max_jobs: None,
        privileges: chime::config::Privileges::of_process(),
    };
    // The journal recipes are for the installed service (its example.yaml); the JSON
    // file recipes for `chime run schedules/`.
    let installed = load(&[root.join("etc/chime/schedules.d")], &options).expect("example.yaml");
    let examples = load(&[root.join("schedules")], &options).expect("schedules/");
    let has =
        |config: &chime::config::Config, name: &str| config.jobs.iter().any(|j| j.name == name);
    let text = readme();
    let journal = names_after(&text, "JOB=");
    let json = names_after(&text, ".job == \"");
    assert!(
        !journal.is_empty() && !json.is_empty(),
        "the recipes are gone?"
    );
    for name in journal {
        assert!(
            has(&installed, name),
            "README: JOB={name} is no job of example.yaml"
        );
    }
    for name in json {
        assert!(
            has(&examples, name),
            "README: .job == \"{name}\" is no job of schedules/"
        );
    }
}

/// The `chime next --cron` example is what the binary prints (stderr's line first).
#[test]
fn the_next_example_is_what_chime_prints() {
    let text = readme();
    let start = text.find("$ chime next --cron ").expect("the next example");
    let block: Vec<&str> = text[start..].lines().take_while(|l| *l != "```").collect();
    let command = block[0].trim_start_matches("$ chime ");
    // The README quotes the expression as a shell would; split it the same way.
    let mut args: Vec<String> = Vec::new();
    let mut rest = command;
    while !rest.is_empty() {
        rest = rest.trim_start();
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("a closing quote");
            args.push(quoted[..end].to_string());
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            args.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    let dir = support::temp_dir();
    let out = support::run(dir.path(), &args, support::LIMIT);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let expected_stderr = format!("{}\n", block[1]);
    let expected_stdout: String = block[2..].iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(out.stderr, expected_stderr, "{out:#?}");
    assert_eq!(out.stdout, expected_stdout, "{out:#?}");
}
