//! The end of the in-process stacks, shared by the benches.

use http::Extensions;
use reqwest_middleware::{Middleware, Next};

/// Answers 200 without a network.
pub(crate) struct Answer;

#[async_trait::async_trait]
impl Middleware for Answer {
    async fn handle(
        &self,
        _req: reqwest::Request,
        _ext: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(reqwest::Response::from(http::Response::new("ok")))
    }
}
