//! Time zones: the [`Zone`] a job's expression is evaluated in, and the system's zone
//! as the C library sees it ([`resolve_system_zone`]).
//!
//! A zone is either an IANA zone compiled into chrono-tz (every `timezone:` in a
//! schedule file, and the fast path) or a zone read at start-up from a TZif file or a
//! POSIX `TZ` rule string (parsed by tz-rs). The engine needs only one question answered
//! of either: the UTC offset at an instant.
//!
//! # Why a rules zone is `&'static`
//! [`Zone`] is `Copy`, as `chrono_tz::Tz` was: the scheduler passes a job's zone by
//! value on its hot path and compares jobs with `==` on reload. Rules zones are
//! therefore interned: each distinct zone is leaked once and shared, so equal zones are
//! the same pointer and the memory kept is bounded by the distinct zones a process ever
//! reads (in practice one: the system's).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, FixedOffset, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Where the C library looks for zone files named by `TZ` or linked from
/// `/etc/localtime`.
pub(crate) const ZONEINFO_DIR: &str = "/usr/share/zoneinfo";

/// The file the C library reads when `TZ` is unset.
pub(crate) const LOCALTIME: &str = "/etc/localtime";

/// TZif files are a few KiB; anything far larger is not one.
const MAX_TZIF_BYTES: u64 = 1024 * 1024;

/// A time zone a schedule is evaluated in.
#[derive(Clone, Copy)]
pub enum Zone {
    /// A zone of the IANA database as compiled into chrono-tz.
    Iana(Tz),
    /// A zone read from a TZif file or a POSIX rule string.
    Rules(&'static RulesZone),
}

/// A zone from a TZif file or a POSIX `TZ` rule, with the name it is shown by.
#[derive(Debug, PartialEq)]
pub struct RulesZone {
    name: String,
    rules: tz::TimeZone,
}

impl RulesZone {
    /// The UTC offset in seconds at the Unix instant `secs`.
    pub(crate) fn offset_at(&self, secs: i64) -> Option<i32> {
        self.rules
            .find_local_time_type(secs)
            .ok()
            .map(|kind| kind.ut_offset())
    }
}

/// Why a zone could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ZoneError(String);

impl Zone {
    pub const UTC: Zone = Zone::Iana(Tz::UTC);

    /// The name shown for the zone: the IANA name when one is known, else what it was
    /// read from (a `TZ` string, a file's path).
    pub fn name(&self) -> &str {
        match self {
            Zone::Iana(tz) => tz.name(),
            Zone::Rules(zone) => &zone.name,
        }
    }

    /// A zone from a POSIX `TZ` rule such as `CET-1CEST,M3.5.0,M10.5.0/3`; shown by
    /// the rule itself.
    pub fn from_posix(rule: &str) -> Result<Zone, ZoneError> {
        // No directories and a reader that always fails: tz-rs would otherwise try the
        // string as a file name first, and which files count is decided here.
        let settings = tz::TimeZoneSettings::new(&[], |_| Err("not read".into()));
        let rules = settings
            .parse_posix_tz(rule)
            .map_err(|err| ZoneError(format!("`{rule}` is not a POSIX TZ rule: {err}")))?;
        Ok(intern(RulesZone {
            name: rule.to_string(),
            rules,
        }))
    }

    /// A zone from the contents of a TZif file, shown as `name`.
    pub fn from_tzif(name: &str, bytes: &[u8]) -> Result<Zone, ZoneError> {
        let rules = tz::TimeZone::from_tz_data(bytes)
            .map_err(|err| ZoneError(format!("not a TZif zone file: {err}")))?;
        Ok(intern(RulesZone {
            name: name.to_string(),
            rules,
        }))
    }

    /// The UTC offset at `at`, e.g. to print an instant as local time.
    pub fn offset_at(&self, at: DateTime<Utc>) -> FixedOffset {
        match self {
            Zone::Iana(tz) => tz.offset_from_utc_datetime(&at.naive_utc()).fix(),
            Zone::Rules(zone) => zone
                .offset_at(at.timestamp())
                .and_then(FixedOffset::east_opt)
                .unwrap_or_else(|| Utc.fix()),
        }
    }

    /// `at` as local time in this zone, with its offset.
    pub fn local(&self, at: DateTime<Utc>) -> DateTime<FixedOffset> {
        at.with_timezone(&self.offset_at(at))
    }
}

impl From<Tz> for Zone {
    fn from(tz: Tz) -> Zone {
        Zone::Iana(tz)
    }
}

impl std::str::FromStr for Zone {
    type Err = ZoneError;

    /// An IANA name only, as a schedule file's `timezone:` takes.
    fn from_str(name: &str) -> Result<Zone, ZoneError> {
        name.parse::<Tz>()
            .map(Zone::Iana)
            .map_err(|_| ZoneError(format!("`{name}` is not an IANA time zone")))
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        match (self, other) {
            (Zone::Iana(a), Zone::Iana(b)) => a == b,
            // Interned: equal zones are one allocation.
            (Zone::Rules(a), Zone::Rules(b)) => std::ptr::eq(*a, *b),
            _ => false,
        }
    }
}

impl Eq for Zone {}

impl PartialEq<Tz> for Zone {
    fn eq(&self, other: &Tz) -> bool {
        matches!(self, Zone::Iana(tz) if tz == other)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Iana(tz) => write!(f, "{tz:?}"),
            Zone::Rules(zone) => write!(f, "Rules({:?})", zone.name),
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The one shared copy of `zone` (see the module's note on why it is leaked).
fn intern(zone: RulesZone) -> Zone {
    static INTERNED: Mutex<Vec<&'static RulesZone>> = Mutex::new(Vec::new());
    // The list is only ever pushed to, so a panic elsewhere cannot leave it torn.
    let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = interned.iter().find(|known| ***known == zone) {
        return Zone::Rules(found);
    }
    let leaked: &'static RulesZone = Box::leak(Box::new(zone));
    interned.push(leaked);
    Zone::Rules(leaked)
}

/// The system's zone, where it came from, and why it is UTC if it fell back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemZone {
    pub zone: Zone,
    /// What named it: `TZ`, the localtime file's path, `--default-timezone`; or
    /// `fallback` when nothing usable did.
    pub source: String,
    /// Set when the zone fell back to UTC: what was wrong, for a warning.
    pub warning: Option<String>,
}

impl SystemZone {
    fn named(zone: Zone, source: &str) -> SystemZone {
        SystemZone {
            zone,
            source: source.to_string(),
            warning: None,
        }
    }

    fn fallback(why: String) -> SystemZone {
        SystemZone {
            zone: Zone::UTC,
            source: "fallback".to_string(),
            warning: Some(format!("{why}; using UTC")),
        }
    }

    /// The zone, after printing the warning, if any, on stderr (as `warning: …`, like
    /// chime's other start-up warnings).
    pub fn warned(self) -> Zone {
        if let Some(warning) = &self.warning {
            eprintln!("warning: {warning}");
        }
        self.zone
    }

    /// The zone the process's environment and `/etc/localtime` name.
    pub fn from_process() -> SystemZone {
        let tz_var = std::env::var_os("TZ").map(|value| value.to_string_lossy().into_owned());
        resolve_system_zone(
            tz_var.as_deref(),
            Path::new(LOCALTIME),
            Path::new(ZONEINFO_DIR),
        )
    }
}

impl fmt::Display for SystemZone {
    /// `Asia/Kolkata (from /etc/localtime)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.warning.is_some() {
            write!(f, "{} (fallback)", self.zone)
        } else {
            write!(f, "{} (from {})", self.zone, self.source)
        }
    }
}

/// The zone the C library would use, given the value of `TZ` (`None`: unset), the
/// localtime file it reads when `TZ` is unset, and the zoneinfo directory names are
/// looked up in:
/// - `TZ` empty: UTC, as glibc does;
/// - `TZ` an IANA name (`Europe/Berlin`, `:Europe/Berlin`), a zone file (`:/path`, or
///   a name under `zoneinfo`), or a POSIX rule (`CET-1CEST,M3.5.0,M10.5.0/3`);
/// - else `localtime`: a symlink into the zoneinfo directory, or a regular TZif file
///   (a copy, as Docker bind mounts and `cp` leave it), named after the zoneinfo file
///   with the same bytes when there is one.
///
/// Anything else falls back to UTC with a warning saying why.
pub fn resolve_system_zone(tz_var: Option<&str>, localtime: &Path, zoneinfo: &Path) -> SystemZone {
    match tz_var {
        Some(value) => from_tz_var(value, zoneinfo),
        None => from_localtime(localtime, zoneinfo),
    }
}

fn from_tz_var(value: &str, zoneinfo: &Path) -> SystemZone {
    if value.is_empty() {
        return SystemZone::named(Zone::UTC, "TZ");
    }
    match parse_zone(value, zoneinfo) {
        Ok(zone) => SystemZone::named(zone, "TZ"),
        Err(reason) => SystemZone::fallback(format!("TZ={value} {reason}")),
    }
}

/// A zone written as `TZ` takes it: an IANA name (`Europe/Berlin`, `:Europe/Berlin`), a
/// zone file (`:/path`, `/path`, or a name of a file under `zoneinfo`), or a POSIX rule
/// (`CET-1CEST,M3.5.0,M10.5.0/3`). The error says why not, worded to follow the text
/// itself: "`x` is not a zone chime understands …".
pub(crate) fn parse_zone(text: &str, zoneinfo: &Path) -> Result<Zone, String> {
    let (colon, spec) = match text.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if spec.starts_with('/') {
        let bytes = read_tzif(Path::new(spec))
            .map_err(|err| format!("names a file that cannot be used: {err}"))?;
        // A file under a zoneinfo directory is shown by its IANA name, and takes the
        // chrono-tz fast path, as the symlinked /etc/localtime does.
        if let Some(tz) = iana_name_of_path(spec) {
            return Ok(Zone::Iana(tz));
        }
        return Zone::from_tzif(text, &bytes).map_err(|err| format!("names a file that is {err}"));
    }
    if let Ok(tz) = spec.parse::<Tz>() {
        return Ok(Zone::Iana(tz));
    }
    // A name chrono-tz does not know (newer tzdata than ours) may still be a file.
    if !spec.is_empty()
        && !spec.split('/').any(|part| part == "..")
        && let Ok(bytes) = read_tzif(&zoneinfo.join(spec))
        && let Ok(zone) = Zone::from_tzif(spec, &bytes)
    {
        return Ok(zone);
    }
    if colon {
        return Err(format!("names no zone file in {}", zoneinfo.display()));
    }
    Zone::from_posix(text).map_err(|_| {
        "is not a zone chime understands (not an IANA name, a :/path, or a POSIX rule)".to_string()
    })
}

fn from_localtime(localtime: &Path, zoneinfo: &Path) -> SystemZone {
    let source = localtime.display().to_string();
    let metadata = match std::fs::symlink_metadata(localtime) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return SystemZone::fallback(format!("TZ is not set and {source} does not exist"));
        }
        Err(err) => return SystemZone::fallback(format!("cannot read {source}: {err}")),
    };
    let bytes = match read_tzif(localtime) {
        Ok(bytes) => bytes,
        Err(err) => return SystemZone::fallback(err),
    };
    if metadata.file_type().is_symlink() {
        // The link's own text first (`../usr/share/zoneinfo/Europe/Berlin`), then the
        // fully resolved path for chains of links.
        let targets = [
            std::fs::read_link(localtime).ok(),
            std::fs::canonicalize(localtime).ok(),
        ];
        for target in targets.into_iter().flatten() {
            let target = target.to_string_lossy();
            let Some(name) = zoneinfo_name(&target) else {
                continue;
            };
            if let Ok(tz) = name.parse::<Tz>() {
                return SystemZone::named(Zone::Iana(tz), &source);
            }
            // A zone newer than chrono-tz's data: the file's rules, under its name.
            if let Ok(zone) = Zone::from_tzif(name, &bytes) {
                return SystemZone::named(zone, &source);
            }
        }
    }
    // A regular file, or a link to somewhere that is not a zoneinfo tree.
    if let Some(name) = find_same_bytes(zoneinfo, &bytes) {
        if let Ok(tz) = name.parse::<Tz>() {
            return SystemZone::named(Zone::Iana(tz), &source);
        }
        if let Ok(zone) = Zone::from_tzif(&name, &bytes) {
            return SystemZone::named(zone, &source);
        }
    }
    match Zone::from_tzif(&source, &bytes) {
        Ok(zone) => SystemZone::named(zone, &source),
        Err(err) => SystemZone::fallback(format!("{source} is {err}")),
    }
}

/// Reads a file that should be a TZif zone file, within a size bound.
fn read_tzif(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_TZIF_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    if bytes.len() as u64 > MAX_TZIF_BYTES {
        return Err(format!("{} is too large to be a zone file", path.display()));
    }
    Ok(bytes)
}

/// `/usr/share/zoneinfo/Europe/Berlin`, `../usr/share/zoneinfo/posix/Europe/Berlin` →
/// `Europe/Berlin`: the zone name a path into a zoneinfo tree stands for.
fn zoneinfo_name(path: &str) -> Option<&str> {
    let index = path.rfind("zoneinfo/")?;
    let name = &path[index + "zoneinfo/".len()..];
    let name = name
        .strip_prefix("posix/")
        .or_else(|| name.strip_prefix("right/"))
        .unwrap_or(name);
    (!name.is_empty()).then_some(name)
}

/// The chrono-tz zone a path into a zoneinfo tree stands for, if chrono-tz knows it.
fn iana_name_of_path(path: &str) -> Option<Tz> {
    zoneinfo_name(path)?.parse::<Tz>().ok()
}

/// The name (relative path) of a regular file under `zoneinfo` whose bytes are
/// `bytes`. Symlinks are not followed (Debian's aliases are symlinks to the file with
/// the canonical name) and the `posix/` and `right/` copies are skipped. Where aliases
/// are hard links (Red Hat), several files match: a zone listed in `zone1970.tab` or
/// `zone.tab` wins, then `Etc/UTC`, then the first in name order, so the answer does not
/// depend on the directory's order on disk.
fn find_same_bytes(zoneinfo: &Path, bytes: &[u8]) -> Option<String> {
    let mut matches = Vec::new();
    let mut pending: Vec<PathBuf> = vec![zoneinfo.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                let name = entry.file_name();
                if !(dir == zoneinfo && (name == "posix" || name == "right")) {
                    pending.push(path);
                }
            } else if kind.is_file()
                && entry
                    .metadata()
                    .is_ok_and(|meta| meta.len() == bytes.len() as u64)
                && std::fs::read(&path).is_ok_and(|other| other == bytes)
                && let Ok(relative) = path.strip_prefix(zoneinfo)
            {
                matches.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    matches.sort();
    let listed = listed_zones(zoneinfo);
    let rank = |name: &String| {
        if listed.contains(name) {
            0
        } else if name == "Etc/UTC" {
            1
        } else {
            2
        }
    };
    // `min_by_key` keeps the first of equals: name order breaks ties.
    matches.into_iter().min_by_key(rank)
}

/// The zone names the tzdata tables list (third column), one per populated region.
fn listed_zones(zoneinfo: &Path) -> Vec<String> {
    ["zone1970.tab", "zone.tab"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(zoneinfo.join(table)).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| line.split('\t').nth(2).map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_rules_zones_are_one_allocation() {
        let a = Zone::from_posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let b = Zone::from_posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let c = Zone::from_posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, Zone::UTC);
        assert_eq!(a.name(), "CET-1CEST,M3.5.0,M10.5.0/3");
    }

    #[test]
    fn posix_rule_offsets() {
        let zone = Zone::from_posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let winter: DateTime<Utc> = "2026-01-15T12:00:00Z".parse().unwrap();
        let summer: DateTime<Utc> = "2026-07-15T12:00:00Z".parse().unwrap();
        assert_eq!(zone.offset_at(winter).local_minus_utc(), 3600);
        assert_eq!(zone.offset_at(summer).local_minus_utc(), 7200);
    }

    #[test]
    fn iana_names_of_paths() {
        let tokyo = Some(chrono_tz::Asia::Tokyo);
        assert_eq!(iana_name_of_path("/usr/share/zoneinfo/Asia/Tokyo"), tokyo);
        assert_eq!(
            iana_name_of_path("../usr/share/zoneinfo/posix/Asia/Tokyo"),
            tokyo
        );
        assert_eq!(iana_name_of_path("/etc/foo"), None);
    }

    #[test]
    fn empty_tz_is_utc_without_a_warning() {
        let zone = resolve_system_zone(Some(""), Path::new("/nonexistent"), Path::new("/x"));
        assert_eq!(zone.zone, Zone::UTC);
        assert_eq!(zone.warning, None);
    }
}
