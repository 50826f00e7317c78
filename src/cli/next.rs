//! `chime next`: the next fire times of a job, of every job, or of an expression.

use super::*;

pub(super) fn next(args: &NextArgs, settings: &Settings) -> u8 {
    let from = args.from.unwrap_or_else(Utc::now);
    let lines: Vec<String> = if let Some(expr) = &args.cron {
        // `--cron */5 * * * *` unquoted: the shell split it, clap took the rest as PATHS.
        if args.paths.len() != 1 || args.paths[0] != std::path::Path::new(DEFAULT_PATH) {
            // The shell may have expanded a `*` into every file name here: show a few.
            let mut extra: Vec<String> = args
                .paths
                .iter()
                .take(4)
                .map(|p| p.display().to_string())
                .collect();
            if args.paths.len() > extra.len() {
                extra.push(format!("… ({} words in all)", args.paths.len()));
            }
            eprintln!(
                "error: --cron takes the whole expression as one argument, but `{}` followed \
                 it; quote the schedule, for example --cron \"*/5 * * * *\"",
                extra.join(" ")
            );
            return exit::USAGE;
        }
        let schedule = match Schedule::parse(expr) {
            Ok(schedule) => schedule,
            Err(err) => {
                eprintln!("error: --cron `{expr}`: {err}");
                return exit::USAGE;
            }
        };
        let tz = match args.tz {
            Some(tz) => tz,
            None => config::default_zone(settings.default_timezone).warned(),
        };
        // In words on stderr; stdout stays the fire times only.
        eprintln!(
            "{expr}: {}",
            crate::cron::describe::describe_in(expr, tz.name())
        );
        for warning in schedule
            .warnings()
            .into_iter()
            .chain(crate::cron::describe::warnings(expr))
        {
            eprintln!("warning: {warning}");
        }
        if matches!(schedule, Schedule::Cron(_)) && schedule.next_after(tz, from).is_none() {
            eprintln!("error: {}", crate::cron::never_fires_message(expr));
            return exit::FAILED;
        }
        schedule
            .fires_after(tz, from)
            .take(args.count)
            .map(|at| format_fire(at, tz))
            .collect()
    } else {
        let Some(config) = load_or_report(&args.paths, settings) else {
            return exit::FAILED;
        };
        match &args.job {
            Some(name) => {
                let Some(job) = config.jobs.iter().find(|job| &job.name == name) else {
                    let known: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
                    eprintln!(
                        "error: no job named `{name}`; loaded jobs: {}",
                        known.join(", ")
                    );
                    return exit::FAILED;
                };
                job.schedule
                    .fires_after(job.timezone, from)
                    .take(args.count)
                    .map(|at| format_fire(at, job.timezone))
                    .collect()
            }
            None => merged_fires(&config.jobs, from, args.count),
        }
    };
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        if writeln!(stdout, "{line}").is_err() {
            break;
        }
    }
    exit::OK
}

/// The next `count` fires of all enabled jobs together, in time order, each line
/// followed by the job's name.
fn merged_fires(jobs: &[Job], from: DateTime<Utc>, count: usize) -> Vec<String> {
    let mut all: Vec<(DateTime<Utc>, &Job)> = jobs
        .iter()
        .filter(|job| job.enabled)
        .flat_map(|job| {
            job.schedule
                .fires_after(job.timezone, from)
                .take(count)
                .map(move |at| (at, job))
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    all.into_iter()
        .take(count)
        .map(|(at, job)| format!("{} {}", format_fire(at, job.timezone), job.name))
        .collect()
}
