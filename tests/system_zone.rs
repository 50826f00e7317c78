//! The system's zone as the C library sees it (DESIGN.md §3, issue 9 item 7):
//! `resolve_system_zone` given a `TZ` value, a localtime file and a zoneinfo directory,
//! with temp files standing in for `/etc/localtime`, so no test needs root.
//!
//! Regression: a regular-file `/etc/localtime` (a Docker bind mount, a `cp`) gave UTC
//! while `date` showed +05:30, and POSIX `TZ` rules, `TZ=:/path` and `TZ=garbage` fell
//! back to UTC without a word.

mod zone_kinds;

use std::path::{Path, PathBuf};

use chime::cron::Schedule;
use chime::zone::{SystemZone, Zone, resolve_system_zone};
use chrono::{DateTime, Utc};
use zone_kinds::{ZONEINFO, have_zoneinfo};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn offset_on(zone: Zone, instant: &str) -> i32 {
    zone.offset_at(at(instant)).local_minus_utc()
}

/// A copy of the system's zone file `name` at `dir/file`.
fn copy_zone(name: &str, dir: &Path, file: &str) -> PathBuf {
    let to = dir.join(file);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(Path::new(ZONEINFO).join(name), &to).unwrap();
    to
}

fn no_tz(localtime: &Path) -> SystemZone {
    resolve_system_zone(None, localtime, Path::new(ZONEINFO))
}

#[track_caller]
fn assert_resolved(got: &SystemZone, name: &str, source: &str) {
    assert_eq!(got.warning, None, "{got:?}");
    assert_eq!(got.zone.name(), name, "{got:?}");
    assert_eq!(got.source, source, "{got:?}");
}

#[test]
fn regular_file_localtime_is_named_after_the_zoneinfo_file_with_its_bytes() {
    if !have_zoneinfo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let localtime = copy_zone("Asia/Kolkata", dir.path(), "localtime");
    let got = no_tz(&localtime);
    assert_resolved(&got, "Asia/Kolkata", &localtime.display().to_string());
    assert_eq!(got.zone, chrono_tz::Asia::Kolkata, "the IANA fast path");
    assert_eq!(offset_on(got.zone, "2026-06-01T00:00:00Z"), 5 * 3600 + 1800);
    assert_eq!(
        got.to_string(),
        format!("Asia/Kolkata (from {})", localtime.display())
    );
}

#[test]
fn regular_file_localtime_without_a_twin_is_read_from_its_bytes() {
    if !have_zoneinfo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let localtime = copy_zone("Europe/Berlin", dir.path(), "localtime");
    // An empty zoneinfo directory: no name to find, the file's own rules still apply.
    let empty = tempfile::tempdir().unwrap();
    let got = resolve_system_zone(None, &localtime, empty.path());
    assert_resolved(
        &got,
        &localtime.display().to_string(),
        &localtime.display().to_string(),
    );
    assert!(matches!(got.zone, Zone::Rules(_)));
    assert_eq!(offset_on(got.zone, "2026-01-15T12:00:00Z"), 3600);
    assert_eq!(offset_on(got.zone, "2026-07-15T12:00:00Z"), 7200);
}

#[test]
fn symlinked_localtime_is_named_by_its_target() {
    if !have_zoneinfo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let localtime = dir.path().join("localtime");
    std::os::unix::fs::symlink(Path::new(ZONEINFO).join("Asia/Tokyo"), &localtime).unwrap();
    let got = no_tz(&localtime);
    assert_resolved(&got, "Asia/Tokyo", &localtime.display().to_string());
    assert_eq!(got.zone, chrono_tz::Asia::Tokyo);

    // A relative link into a zoneinfo tree of its own, as Debian writes it.
    let tree = dir.path().join("usr/share/zoneinfo");
    copy_zone("America/New_York", &tree, "America/New_York");
    let relative = dir.path().join("etc/localtime");
    std::fs::create_dir_all(relative.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("../usr/share/zoneinfo/America/New_York", &relative).unwrap();
    let got = resolve_system_zone(None, &relative, &tree);
    assert_resolved(&got, "America/New_York", &relative.display().to_string());
}

#[test]
fn tz_names_an_iana_zone_with_or_without_a_colon() {
    let nowhere = Path::new("/nonexistent/localtime");
    for value in ["Europe/Berlin", ":Europe/Berlin"] {
        let got = resolve_system_zone(Some(value), nowhere, Path::new(ZONEINFO));
        assert_resolved(&got, "Europe/Berlin", "TZ");
        assert_eq!(got.zone, chrono_tz::Europe::Berlin);
    }
}

#[test]
fn tz_posix_rule_follows_debian_rules_across_the_spring_forward_night() {
    let rule = "CET-1CEST,M3.5.0,M10.5.0/3";
    let got = resolve_system_zone(Some(rule), Path::new("/nonexistent"), Path::new(ZONEINFO));
    assert_resolved(&got, rule, "TZ");
    assert!(matches!(got.zone, Zone::Rules(_)));
    // 02:30 does not exist on 29 March 2026: the fixed-time job fires once, at 03:00
    // CEST (01:00 UTC); a wildcard job has no fires in the gap.
    let fixed: Vec<_> = Schedule::parse("30 2 * * *")
        .unwrap()
        .fires_after(got.zone, at("2026-03-28T12:00:00Z"))
        .take(2)
        .collect();
    assert_eq!(
        fixed,
        [at("2026-03-29T01:00:00Z"), at("2026-03-30T00:30:00Z")]
    );
    let wildcard: Vec<_> = Schedule::parse("*/30 * * * *")
        .unwrap()
        .fires_after(got.zone, at("2026-03-29T00:15:00Z"))
        .take(3)
        .collect();
    assert_eq!(
        wildcard,
        [
            at("2026-03-29T00:30:00Z"), // 01:30 CET
            at("2026-03-29T01:00:00Z"), // 03:00 CEST: 02:00 and 02:30 never happen
            at("2026-03-29T01:30:00Z"),
        ]
    );
}

#[test]
fn tz_colon_path_reads_the_file() {
    if !have_zoneinfo() {
        return;
    }
    let value = ":/usr/share/zoneinfo/America/New_York";
    let got = resolve_system_zone(Some(value), Path::new("/nonexistent"), Path::new(ZONEINFO));
    assert_resolved(&got, "America/New_York", "TZ");
    assert_eq!(got.zone, chrono_tz::America::New_York);

    // A file outside any zoneinfo tree keeps the TZ string as its name.
    let dir = tempfile::tempdir().unwrap();
    let file = copy_zone("America/New_York", dir.path(), "ny.tzif");
    let value = format!(":{}", file.display());
    let got = resolve_system_zone(Some(&value), Path::new("/nonexistent"), Path::new(ZONEINFO));
    assert_resolved(&got, &value, "TZ");
    assert_eq!(offset_on(got.zone, "2026-01-15T12:00:00Z"), -5 * 3600);
    assert_eq!(offset_on(got.zone, "2026-07-15T12:00:00Z"), -4 * 3600);
}

#[test]
fn tz_garbage_falls_back_to_utc_with_a_warning_saying_why() {
    let got = resolve_system_zone(
        Some("garbage"),
        Path::new("/nonexistent"),
        Path::new(ZONEINFO),
    );
    assert_eq!(got.zone, Zone::UTC);
    assert_eq!(
        got.warning.as_deref(),
        Some(
            "TZ=garbage is not a zone chime understands (not an IANA name, a :/path, or a \
             POSIX rule); using UTC"
        )
    );
    assert_eq!(got.to_string(), "UTC (fallback)");
}

#[test]
fn other_fallbacks_each_say_why() {
    let zoneinfo = Path::new(ZONEINFO);
    let nowhere = Path::new("/nonexistent/localtime");
    let dir = tempfile::tempdir().unwrap();
    let not_tzif = dir.path().join("not-tzif");
    std::fs::write(&not_tzif, "Europe/Berlin\n").unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
    let cases: [(Option<&str>, &Path, &str); 5] = [
        (
            Some(":Nowhere/Zone"),
            nowhere,
            "TZ=:Nowhere/Zone names no zone file in",
        ),
        (
            Some(":/nonexistent/zone"),
            nowhere,
            "TZ=:/nonexistent/zone names a file",
        ),
        (
            None,
            nowhere,
            "TZ is not set and /nonexistent/localtime does not exist",
        ),
        (None, &not_tzif, "not-tzif is not a TZif zone file"),
        (None, &dangling, "cannot read"),
    ];
    for (tz, localtime, why) in cases {
        let got = resolve_system_zone(tz, localtime, zoneinfo);
        assert_eq!(got.zone, Zone::UTC, "{tz:?} {localtime:?}");
        let warning = got.warning.unwrap_or_default();
        assert!(
            warning.contains(why) && warning.ends_with("; using UTC"),
            "{tz:?} {localtime:?}: {warning:?} does not say {why:?}"
        );
    }
}

#[test]
fn empty_tz_is_utc_as_glibc_has_it() {
    let got = resolve_system_zone(Some(""), Path::new("/nonexistent"), Path::new(ZONEINFO));
    assert_resolved(&got, "UTC", "TZ");
}

#[test]
fn tz_wins_over_localtime() {
    if !have_zoneinfo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let localtime = copy_zone("Asia/Kolkata", dir.path(), "localtime");
    let got = resolve_system_zone(Some("Asia/Tokyo"), &localtime, Path::new(ZONEINFO));
    assert_resolved(&got, "Asia/Tokyo", "TZ");
}

/// Where aliases are hard links (Red Hat's tzdata), several files share the bytes of
/// /etc/localtime: the name the tzdata tables list wins over an alias that sorts first.
#[test]
fn hard_linked_aliases_resolve_to_the_listed_name() {
    if !have_zoneinfo() {
        return;
    }
    let tree = tempfile::tempdir().unwrap();
    let kolkata = copy_zone("Asia/Kolkata", tree.path(), "Asia/Kolkata");
    std::fs::hard_link(&kolkata, tree.path().join("Asia/Calcutta")).unwrap();
    std::fs::write(
        tree.path().join("zone1970.tab"),
        "#codes\tcoordinates\tTZ\tcomments\nIN\t+2232+08822\tAsia/Kolkata\n",
    )
    .unwrap();
    let etc = tempfile::tempdir().unwrap();
    let localtime = copy_zone("Asia/Kolkata", etc.path(), "localtime");
    let got = resolve_system_zone(None, &localtime, tree.path());
    assert_resolved(&got, "Asia/Kolkata", &localtime.display().to_string());

    // Without the tables, name order decides, whatever the directory's order on disk.
    std::fs::remove_file(tree.path().join("zone1970.tab")).unwrap();
    let got = resolve_system_zone(None, &localtime, tree.path());
    assert_resolved(&got, "Asia/Calcutta", &localtime.display().to_string());
}

/// A link into a zoneinfo tree names the zone even when chrono-tz does not know it
/// (tzdata newer than chime's): the file's rules apply under that name. A link to
/// somewhere else is named like a copy, by the zoneinfo file with its bytes.
#[test]
fn symlinks_to_unknown_names_and_outside_zoneinfo() {
    if !have_zoneinfo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("zoneinfo");
    let newer = copy_zone("Europe/Berlin", &tree, "Mars/Olympus_Mons");
    let localtime = dir.path().join("localtime");
    std::os::unix::fs::symlink(&newer, &localtime).unwrap();
    let got = resolve_system_zone(None, &localtime, &tree);
    assert_resolved(&got, "Mars/Olympus_Mons", &localtime.display().to_string());
    assert_eq!(offset_on(got.zone, "2026-07-15T12:00:00Z"), 7200);

    let elsewhere = copy_zone("Asia/Kolkata", dir.path(), "alternatives/tz");
    let other = dir.path().join("localtime2");
    std::os::unix::fs::symlink(&elsewhere, &other).unwrap();
    let got = no_tz(&other);
    assert_resolved(&got, "Asia/Kolkata", &other.display().to_string());
}
