//! The log writer thread: formatting and writing happen there, fed by a channel, so
//! the scheduler never waits for stderr or the journal.

use std::io::Write;
use std::sync::mpsc;
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};

use super::journald::JournalWriter;
use super::{Format, format_json, format_text};
use crate::events::{Event, Events, Level, level_of};

enum Message {
    Event(DateTime<Utc>, Event),
    Stop,
}

/// The log writer thread. Dropping the guard writes every pending line, then stops it.
pub struct LogGuard {
    sender: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let _ = self.sender.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread; events at `min_level` or more important are written.
pub fn start(
    format: Format,
    min_level: Level,
    mut out: Box<dyn Write + Send>,
) -> (Events, LogGuard) {
    let (sender, receiver) = mpsc::channel::<Message>();
    let thread = std::thread::Builder::new()
        .name("chime-log".into())
        .spawn(move || {
            let journal = match format {
                Format::Journald => JournalWriter::connect().ok(),
                _ => None,
            };
            while let Ok(first) = receiver.recv() {
                // Write everything already queued, then flush once.
                for message in std::iter::once(first).chain(receiver.try_iter()) {
                    let (at, event) = match message {
                        Message::Event(at, event) => (at, event),
                        Message::Stop => {
                            let _ = out.flush();
                            return;
                        }
                    };
                    if level_of(&event) > min_level {
                        continue;
                    }
                    if let Some(journal) = &journal
                        && journal.write(at, &event).is_ok()
                    {
                        continue;
                    }
                    let line = match format {
                        Format::Text => format_text(at, &event),
                        Format::Json | Format::Journald => format_json(at, &event),
                    };
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
        })
        .ok();
    let tx = sender.clone();
    let events = Events::new(move |event| {
        let _ = tx.send(Message::Event(Utc::now(), event));
    });
    (events, LogGuard { sender, thread })
}
