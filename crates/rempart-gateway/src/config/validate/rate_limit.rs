//! `[rate_limit]`: the per-client token bucket (rate, burst, IPv6 prefix),
//! and the deprecated `trusted_proxies` it used to hold.

use ipnet::IpNet;

use crate::config::RateLimitConfig;
use crate::config::reader::{Reader, Section};

impl Reader<'_> {
    /// `[rate_limit]`, and its deprecated `trusted_proxies` with where it is.
    #[allow(clippy::type_complexity)]
    pub(super) fn rate_limit(
        &mut self,
        top: Section<'_>,
    ) -> Option<(RateLimitConfig, Option<(Vec<IpNet>, usize)>)> {
        let (table, at, path) = self.table(top, "rate_limit")?;
        let s = Section {
            table,
            at,
            path: &path,
        };
        self.known_keys(s, &["rate", "burst", "ipv6_prefix", "trusted_proxies"]);
        let rate = self.value(
            s,
            "rate",
            "requests per second, a whole number from 1 to 1000000",
            true,
            |i| match i.as_integer() {
                Some(n) if (1..=1_000_000).contains(&n) => Ok(n as u32),
                _ => Err(String::new()),
            },
        );
        let burst = self.int(s, "burst", 1, 1_000_000, i64::from(rate.unwrap_or(1))) as u32;
        let ipv6_prefix = self.int(s, "ipv6_prefix", 1, 128, 64) as u8;
        let old_trusted = self.nets(s, "trusted_proxies");
        Some((
            RateLimitConfig {
                rate: rate.unwrap_or(1),
                burst,
                ipv6_prefix,
            },
            old_trusted,
        ))
    }
}
