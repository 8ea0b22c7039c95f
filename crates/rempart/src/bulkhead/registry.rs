use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Bulkhead;
use crate::ConfigError;

/// One [`Bulkhead`] per downstream service, so a slow service fills only its
/// own slots (seed 001 case 4: `reporting: 3, users: 30, orders: 20, ...`).
///
/// ```
/// use rempart::bulkhead::Bulkheads;
/// use std::time::Duration;
///
/// let bulkheads = Bulkheads::parse(
///     "analytics: 5, users: 30, orders: 20, inventory: 20, notifications: 50, reporting: 3",
///     Duration::from_secs(5),
/// )
/// .unwrap();
/// let _held: Vec<_> = (0..3).map(|_| bulkheads["reporting"].try_acquire_owned().unwrap()).collect();
/// assert!(bulkheads["reporting"].try_acquire().is_err(), "reporting is full");
/// assert!(bulkheads["users"].try_acquire().is_ok(), "users is untouched");
/// assert!(Bulkheads::parse("users: thirty", Duration::ZERO).is_err());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Bulkheads {
    by_name: Arc<HashMap<Arc<str>, Bulkhead>>,
}

impl Bulkheads {
    /// A bulkhead per `(service, max_concurrent)`, each waiting up to `max_wait` for a slot.
    pub fn new<I, N>(limits: I, max_wait: Duration) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (N, u32)>,
        N: Into<Arc<str>>,
    {
        let mut by_name = HashMap::new();
        for (name, max) in limits {
            let name: Arc<str> = name.into();
            if by_name.contains_key(&name) {
                return Err(ConfigError::new(
                    super::POLICY,
                    &*name,
                    "this service is listed twice; keep one limit per service",
                ));
            }
            let bulkhead = Bulkhead::builder()
                .name(Arc::clone(&name))
                .max_concurrent(max)
                .max_wait(max_wait)
                .build()
                .map_err(|e| ConfigError::new(super::POLICY, &*name, e.to_string()))?;
            by_name.insert(name, bulkhead);
        }
        Ok(Bulkheads {
            by_name: Arc::new(by_name),
        })
    }

    /// Reads limits written as `service: max, service: max, ...` (the seed's
    /// notation; a trailing comma is fine).
    pub fn parse(spec: &str, max_wait: Duration) -> Result<Self, ConfigError> {
        let mut limits = Vec::new();
        for (i, item) in spec.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                continue;
            }
            let (name, max) = item.split_once(':').ok_or_else(|| {
                ConfigError::new(
                    super::POLICY,
                    format!("item {}", i + 1),
                    format!("`{item}` is not `service: max`; write e.g. `reporting: 3`"),
                )
            })?;
            let (name, max) = (name.trim(), max.trim());
            if name.is_empty() {
                return Err(ConfigError::new(
                    super::POLICY,
                    format!("item {}", i + 1),
                    format!("`{item}` has no service name before the colon"),
                ));
            }
            let max: u32 = max.parse().map_err(|_| {
                ConfigError::new(
                    super::POLICY,
                    name,
                    format!(
                        "`{max}` is not a whole number of concurrent calls; write e.g. `{name}: 3`"
                    ),
                )
            })?;
            limits.push((name.to_owned(), max));
        }
        Bulkheads::new(limits, max_wait)
    }

    /// The bulkhead of `service`, if it has one.
    pub fn get(&self, service: &str) -> Option<&Bulkhead> {
        self.by_name.get(service)
    }

    /// Every bulkhead, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Bulkhead> {
        self.by_name.values()
    }

    /// The number of services.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// `true` when there is no service.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl std::ops::Index<&str> for Bulkheads {
    type Output = Bulkhead;

    /// The bulkhead of `service`; panics if there is none (use [`Bulkheads::get`] otherwise).
    fn index(&self, service: &str) -> &Bulkhead {
        self.get(service)
            .unwrap_or_else(|| panic!("no bulkhead for service `{service}`"))
    }
}
