//! A job's `schedule:` (parsed once per distinct text, and checked to fire at least once
//! in the job's zone) and `timezone:` (IANA names, with a "did you mean").

use chrono_tz::{TZ_VARIANTS, Tz};

use super::{FileChecker, escaped};
use crate::config::ConfigWarning;
use crate::config::suggest::{closest, distance};
use crate::config::tree::{Node, NodeKind};
use crate::cron::{CronError, Schedule};
use crate::zone::Zone;

/// A `schedule` text's parse, and for each zone met with it whether it ever fires.
pub(super) struct ParsedSchedule {
    parsed: Result<Schedule, CronError>,
    fires: Vec<(Zone, bool)>,
}

impl<'a> FileChecker<'a, '_> {
    /// The job's schedule and its text, if the text parses and fires in `timezone`; its
    /// warnings are recorded.
    pub(super) fn schedule(&mut self, node: &Node, timezone: Zone) -> Option<(String, Schedule)> {
        let text = self.schedule_text(node)?;
        let now = self.now;
        // Looked up by `&str`: a String is made only for a text not seen before.
        let cached = match self.schedules.get_mut(text.as_str()) {
            Some(cached) => cached,
            None => self
                .schedules
                .entry(text.clone())
                .or_insert(ParsedSchedule {
                    parsed: Schedule::parse(text),
                    fires: Vec::new(),
                }),
        };
        let schedule = match &cached.parsed {
            Ok(schedule) => schedule.clone(),
            Err(err) => {
                let message = format!("`schedule`: {err}");
                self.error(node, message);
                return None;
            }
        };
        let fires = match cached.fires.iter().find(|(zone, _)| *zone == timezone) {
            Some(&(_, fires)) => fires,
            None => {
                let fires = !matches!(schedule, Schedule::Cron(_))
                    || schedule.next_after(timezone, now).is_some();
                cached.fires.push((timezone, fires));
                fires
            }
        };
        if !fires {
            let message = crate::cron::never_fires_message(text);
            self.error(node, message);
            return None;
        }
        for warning in schedule
            .warnings()
            .into_iter()
            .chain(crate::cron::describe::warnings(text))
        {
            let location = self.location(node);
            self.out.warnings.push(ConfigWarning {
                location,
                message: format!("`schedule`: {warning}"),
            });
        }
        Some((text.clone(), schedule))
    }

    /// The text of a `schedule` that is a string; anything else is an error.
    fn schedule_text<'n>(&mut self, node: &'n Node) -> Option<&'n String> {
        match &node.kind {
            NodeKind::Str(text) => Some(text),
            NodeKind::Null => {
                self.error(
                    node,
                    "`schedule` is empty; write a cron expression such as \"30 2 * * *\" \
                     or a macro such as \"@daily\""
                        .to_string(),
                );
                None
            }
            _ => {
                let message = format!(
                    "`schedule` must be a string such as \"30 2 * * *\" or \"@daily\", \
                     not {} (`{}`); quote it",
                    node.describe(),
                    self.text(node)
                );
                self.error(node, message);
                None
            }
        }
    }

    pub(super) fn timezone(&mut self, path: &str, node: &Node) -> Option<Zone> {
        let NodeKind::Str(name) = &node.kind else {
            let message = format!(
                "`{path}` must be a time zone name such as \"Europe/Berlin\" or \"UTC\", \
                 not {}",
                node.describe()
            );
            self.error(node, message);
            return None;
        };
        // IANA names only: the other forms of a zone are for the system's zone.
        if let Ok(tz) = name.parse::<Tz>() {
            return Some(Zone::Iana(tz));
        }
        let hint = match suggest_zone(name) {
            Some(zone) => format!("did you mean `{zone}`?"),
            None => "use an IANA name such as `Europe/Berlin` or `UTC` (see \
                     `timedatectl list-timezones`)"
                .to_string(),
        };
        let message = format!("`{path}`: unknown time zone `{}`; {hint}", escaped(name));
        self.error(node, message);
        None
    }
}

/// A zone name close to `name`: by whole name, or by city for a bare `Berlin`.
fn suggest_zone(name: &str) -> Option<&'static str> {
    let names = || TZ_VARIANTS.iter().map(|tz| tz.name());
    if let Some(zone) = closest(name, names(), 3) {
        return Some(zone);
    }
    if name.contains('/') {
        return None;
    }
    let wanted = name.replace(' ', "_");
    names()
        .filter_map(|zone| {
            let city = zone.rsplit('/').next()?;
            (zone.contains('/') && distance(&wanted, city) <= 1).then_some(zone)
        })
        .min_by_key(|zone| distance(&wanted, zone.rsplit('/').next().unwrap_or(zone)))
}
