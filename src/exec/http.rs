//! HTTP executor: placeholder until implemented.
use std::sync::Arc;
use super::{Attempt, AttemptResult, OutputSink};
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(String);
#[derive(Debug, Clone)]
pub struct HttpExecutor {}
impl HttpExecutor {
    pub fn new() -> Result<Self, ClientError> { Ok(HttpExecutor {}) }
    pub async fn execute(&self, _attempt: Attempt, _output: Arc<OutputSink>) -> AttemptResult {
        todo!("http executor")
    }
}
