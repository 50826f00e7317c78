//! Shell executor: placeholder until implemented.
use std::sync::Arc;
use super::{Attempt, AttemptResult, OutputSink};
pub async fn execute(_attempt: Attempt, _output: Arc<OutputSink>) -> AttemptResult {
    todo!("shell executor")
}
