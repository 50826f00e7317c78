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
    let rows: Vec<[String; 4]> = config
        .jobs
        .iter()
        .map(|job| {
            [
                job.name.clone(),
                job.schedule_text.clone(),
                job.timezone.name().to_string(),
                describe_next(job, now),
            ]
        })
        .collect();
    let mut stdout = std::io::stdout().lock();
    let _ = write_table(&mut stdout, ["JOB", "SCHEDULE", "ZONE", "NEXT FIRE"], &rows);
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

fn write_table(
    out: &mut impl Write,
    header: [&str; 4],
    rows: &[[String; 4]],
) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 4]| -> std::io::Result<()> {
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
        line(out, [&row[0], &row[1], &row[2], &row[3]])?;
    }
    Ok(())
}
