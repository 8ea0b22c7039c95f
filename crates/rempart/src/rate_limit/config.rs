use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;

use crate::ConfigError;
use crate::clock::{Clock, MonotonicClock};

/// The settings common to the token-bucket limiters, validated by `build`.
#[derive(Debug, Clone)]
pub(crate) struct BucketSettings {
    pub(crate) name: Arc<str>,
    pub(crate) rate: Option<(u32, Duration)>,
    pub(crate) burst: Option<u32>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Default for BucketSettings {
    fn default() -> Self {
        BucketSettings {
            name: Arc::from("rate_limit"),
            rate: None,
            burst: None,
            clock: Arc::new(MonotonicClock::new()),
        }
    }
}

/// A validated token bucket: what governor needs, and what a refusal reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    pub(crate) quota: Quota,
    pub(crate) burst: u32,
    /// Time to earn one token back.
    pub(crate) per_token: Duration,
}

impl Bucket {
    /// Time to refill the whole bucket from empty.
    pub(crate) fn window(&self) -> Duration {
        self.per_token.saturating_mul(self.burst)
    }
}

impl BucketSettings {
    pub(crate) fn bucket(&self) -> Result<Bucket, ConfigError> {
        let (count, period) = self.rate.ok_or_else(|| {
            ConfigError::new(
                super::POLICY,
                "rate",
                "no rate was set; call .rate(10, Duration::from_secs(1)) for 10 requests per second",
            )
        })?;
        if count == 0 {
            return Err(ConfigError::new(
                super::POLICY,
                "rate",
                "a rate of 0 requests admits nothing; use at least 1 (to refuse everything, do not route to the service)",
            ));
        }
        if period.is_zero() {
            return Err(ConfigError::new(
                super::POLICY,
                "rate",
                "the period is zero; use a period such as Duration::from_secs(1)",
            ));
        }
        let per_token = period / count;
        if per_token.is_zero() {
            return Err(ConfigError::new(
                super::POLICY,
                "rate",
                format!(
                    "{count} per {period:?} is more than one request per nanosecond; use a longer period or a smaller count"
                ),
            ));
        }
        let burst = self.burst.unwrap_or(count);
        let nz = NonZeroU32::new(burst).ok_or_else(|| {
            ConfigError::new(
                super::POLICY,
                "burst",
                "a burst of 0 admits nothing; use at least 1 (the seed uses 20 for 10 per second)",
            )
        })?;
        let quota = Quota::with_period(per_token)
            .expect("per_token is not zero")
            .allow_burst(nz);
        Ok(Bucket {
            quota,
            burst,
            per_token,
        })
    }
}
