//! A job's `command:`: a string runs under `/bin/sh -c`, a list runs without a shell.

use super::FileChecker;
use crate::config::tree::{Node, NodeKind};
use crate::job::ShellCommand;

impl FileChecker<'_, '_> {
    pub(super) fn command(&mut self, node: &Node) -> Option<ShellCommand> {
        const HOW: &str = "a string runs under /bin/sh -c, a list such as \
                           [\"/usr/bin/backup\", \"--full\"] runs without a shell";
        match &node.kind {
            NodeKind::Str(script) if script.trim().is_empty() => {
                self.error(node, format!("`command` is empty; {HOW}"));
                None
            }
            NodeKind::Str(script) if script.contains('\0') => {
                self.error(
                    node,
                    "`command` contains a NUL character, which no command line can hold; \
                     remove it"
                        .to_string(),
                );
                None
            }
            NodeKind::Str(script) => Some(ShellCommand::Script(script.clone())),
            NodeKind::Seq(items) if items.is_empty() => {
                self.error(node, format!("`command` is an empty list; {HOW}"));
                None
            }
            NodeKind::Seq(items) => {
                let mut argv = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    match item.scalar_text(self.src) {
                        Some(arg) if index == 0 && arg.is_empty() => self.error(
                            item,
                            "`command[0]`, the program to run, is empty; write its path, \
                             e.g. \"/usr/bin/backup\""
                                .to_string(),
                        ),
                        Some(arg) if arg.contains('\0') => self.error(
                            item,
                            format!(
                                "`command[{index}]` contains a NUL character, which no \
                                 argument can hold; remove it"
                            ),
                        ),
                        Some(arg) => argv.push(arg.into_owned()),
                        None => {
                            let message = format!(
                                "`command[{index}]` must be a string, not {}; {HOW}",
                                item.describe()
                            );
                            self.error(item, message);
                        }
                    }
                }
                (argv.len() == items.len()).then_some(ShellCommand::Argv(argv))
            }
            _ => {
                let message = format!(
                    "`command` must be a string or a list, not {}; {HOW}",
                    node.describe()
                );
                self.error(node, message);
                None
            }
        }
    }
}
