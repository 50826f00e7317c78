//! Temporary stub until the real module lands (being written in parallel).
use std::time::Duration;
pub struct Notifier;
impl Notifier {
    pub fn from_env() -> Notifier { Notifier }
    pub fn ready(&self) {}
    pub fn reloading(&self) {}
    pub fn stopping(&self) {}
    pub fn status(&self, _t: &str) {}
    pub fn extend_timeout(&self, _d: Duration) {}
    pub fn watchdog(&self) {}
    pub fn watchdog_interval() -> Option<Duration> { None }
}
