//! One zone in each form chime reads it: compiled into chrono-tz (a schedule file's
//! `timezone:`), from the system's TZif file, and from a POSIX `TZ` rule. The time-rule
//! tests run every case in each form and expect the same fires.

#![allow(dead_code)] // Each test crate uses its own part of this module.

use std::io::Write;
use std::path::Path;
use std::sync::Once;

use chime::zone::Zone;

pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// The zones' rules as a POSIX `TZ` string, as the footers of their tzdata 2025b TZif
/// files state them. They hold for the years the tests use (2026), not for history.
const POSIX_RULES: &[(&str, &str)] = &[
    ("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("America/New_York", "EST5EDT,M3.2.0,M11.1.0"),
    (
        "Australia/Lord_Howe",
        "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
    ),
    ("America/Santiago", "<-04>4<-03>,M9.1.6/24,M4.1.6/24"),
    ("Asia/Kolkata", "IST-5:30"),
    ("UTC", "UTC0"),
];

/// The POSIX rule of `name` for 2026, if the table has one.
pub fn posix_rule(name: &str) -> Option<&'static str> {
    POSIX_RULES
        .iter()
        .find(|(zone, _)| *zone == name)
        .map(|(_, rule)| *rule)
}

/// Whether the system's tzdata is installed. When it is not, says so once on the
/// terminal (written to stderr directly, past the test harness's capture), and the
/// TZif forms are skipped.
pub fn have_zoneinfo() -> bool {
    static NOTICE: Once = Once::new();
    let present = Path::new(ZONEINFO).join("Europe/Berlin").is_file();
    if !present {
        NOTICE.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {ZONEINFO} is absent (install tzdata); zones read from TZif \
                 files are not tested"
            );
        });
    }
    present
}

/// `name` read from the system's TZif file, shown as the file's path.
pub fn tzif(name: &str) -> Option<Zone> {
    if !have_zoneinfo() {
        return None;
    }
    let path = Path::new(ZONEINFO).join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(Zone::from_tzif(&path.display().to_string(), &bytes).expect("a TZif file"))
}

/// `name` in every form available, each with a label for messages.
pub fn kinds(name: &str) -> Vec<(String, Zone)> {
    let iana: Zone = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut all = vec![(format!("{name} (chrono-tz)"), iana)];
    if let Some(zone) = tzif(name) {
        assert!(matches!(zone, Zone::Rules(_)));
        all.push((format!("{name} (TZif file)"), zone));
    }
    if let Some(rule) = posix_rule(name) {
        let zone = Zone::from_posix(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
        all.push((format!("{name} (POSIX rule {rule})"), zone));
    }
    all
}
