//! What can go wrong opening or migrating a database, said so a user can fix it.

/// An error from the database layer. Every message names the database URL,
/// with any password replaced by `***`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The URL is not `sqlite://…` or `postgres://…`: a usage error.
    #[error(
        "{url}: unknown database URL scheme; use sqlite://PATH (a file, created if missing) or postgres://USER@HOST:PORT/DATABASE"
    )]
    UnknownScheme {
        /// The URL, redacted.
        url: String,
    },
    /// The URL has the right scheme but cannot be parsed: a usage error.
    #[error("{url}: invalid database URL: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The database could not be reached or opened in time.
    #[error(
        "cannot open the database at {url}: {reason}; check that the server is running and the URL (host, port, user, database) is right"
    )]
    Unreachable {
        /// The URL, redacted.
        url: String,
        /// The driver's reason, or the deadline that passed.
        reason: String,
    },
    /// A query failed.
    #[error("database {url}: {source}")]
    Query {
        /// The URL, redacted.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database holds a newer schema for a component than this binary knows.
    #[error(
        "the {component} schema in {url} is at version {found}, newer than the {known} this binary knows; run a newer rempart against it (or use another database)"
    )]
    SchemaTooNew {
        /// The URL, redacted.
        url: String,
        /// The component (`saga`, `outbox`, …).
        component: String,
        /// The version found in the database.
        found: i64,
        /// The latest version this binary has.
        known: i64,
    },
    /// A migration failed; its transaction was rolled back.
    #[error("{url}: migration {component} v{version} ({name}) failed: {source}")]
    Migration {
        /// The URL, redacted.
        url: String,
        /// The component.
        component: String,
        /// The migration's version.
        version: i64,
        /// The migration's name.
        name: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl DbError {
    /// Is this the caller's mistake (a bad URL), rather than the database's state?
    /// A CLI exits 64 for these.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            DbError::UnknownScheme { .. } | DbError::InvalidUrl { .. }
        )
    }
}

/// `url` with the password, if any, replaced by `***`: safe for logs and errors.
///
/// ```
/// assert_eq!(rempart_db::redact("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
/// assert_eq!(rempart_db::redact("sqlite://data/sagas.db"), "sqlite://data/sagas.db");
/// ```
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = format!("{scheme}://");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    // A password can also ride in the query string.
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let parts: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => kv.to_owned(),
                })
                .collect();
            out.push_str(&parts.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_a_password_in_the_authority_and_the_query() {
        assert_eq!(
            redact("postgres://u:p@h/db?password=x&sslmode=disable"),
            "postgres://u:***@h/db?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("not a url"), "not a url");
    }
}
