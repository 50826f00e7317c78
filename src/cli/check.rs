//! `chime check`: validate the schedules, list every job with its next fire.

use super::*;

pub(super) fn check(paths: &[PathBuf], settings: &Settings) -> u8 {
    let default_zone = config::default_zone(settings.default_timezone);
    let mut options = settings.load_options(Some(default_zone.clone().warned()));
    options.privileges.check_only = true;
    let Some(config) = load_with(paths, &options) else {
        return exit::FAILED;
    };
    let now = Utc::now();
    let mut stderr = std::io::stderr().lock();
    // On stderr, as a note beside the listing: stdout stays the table and its summary.
    let _ = writeln!(stderr, "default zone: {default_zone}");
    for warning in &config.warnings {
        let _ = writeln!(stderr, "warning: {warning}");
    }
    let rows: Vec<[String; 5]> = config
        .jobs
        .iter()
        .map(|job| {
            [
                job.name.clone(),
                job.schedule_text.clone(),
                job.timezone.name().to_string(),
                describe_next(job, now),
                crate::cron::describe::describe(&job.schedule_text),
            ]
        })
        .collect();
    let mut stdout = std::io::stdout().lock();
    let header = ["JOB", "SCHEDULE", "ZONE", "NEXT FIRE", "MEANING"];
    let _ = write_table(&mut stdout, header, &rows);
    let _ = writeln!(
        stdout,
        "{} job{} in {} file{}: ok",
        config.jobs.len(),
        if config.jobs.len() == 1 { "" } else { "s" },
        config.files.len(),
        if config.files.len() == 1 { "" } else { "s" },
    );
    exit::OK
}

fn describe_next(job: &Job, now: DateTime<Utc>) -> String {
    if !job.enabled {
        return "disabled".to_string();
    }
    match (&job.schedule, job.schedule.next_after(job.timezone, now)) {
        (Schedule::Reboot, _) => "at service start".to_string(),
        (_, Some(at)) => format_fire(at, job.timezone),
        (_, None) => "never".to_string(),
    }
}

fn write_table<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; N]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, header)?;
    for row in rows {
        line(out, row.each_ref().map(String::as_str))?;
    }
    Ok(())
}
