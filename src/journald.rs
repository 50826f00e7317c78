//! Temporary stub until the real module lands (being written in parallel).
pub struct JournalWriter;
impl JournalWriter {
    pub fn connect() -> std::io::Result<JournalWriter> { Ok(JournalWriter) }
    pub fn write(&self, _at: chrono::DateTime<chrono::Utc>, _e: &crate::events::Event) -> std::io::Result<()> { Ok(()) }
}
pub fn stderr_is_journal() -> bool { false }
