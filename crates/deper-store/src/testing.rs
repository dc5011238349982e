//! Helpers for tests that run against PostgreSQL: each test gets a fresh database, so
//! tests run in parallel without seeing each other's rows.

use crate::error::Result;
use sqlx::Connection;

/// The environment variable naming the PostgreSQL server tests may use.
pub const POSTGRES_ENV: &str = "DEPER_TEST_POSTGRES_URL";

/// `DEPER_TEST_POSTGRES_URL`, when set and not empty.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|u| !u.trim().is_empty())
}

/// Test databases older than this are dropped when a new one is made (tests do not clean up
/// after themselves: a pool may still hold connections when a test ends).
const STALE_AFTER_SECS: u64 = 3600;

/// Creates a new, empty database `deper_test_<unix seconds>_<random>` on the server of
/// `base_url` and returns its URL (the role in `base_url` needs CREATEDB). Test databases of
/// this role older than an hour are dropped first.
pub async fn fresh_postgres_database(base_url: &str) -> Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let name = format!("deper_test_{now}_{}", crate::random_hex(6)?);
    let mut conn = sqlx::PgConnection::connect(base_url).await?;
    let existing: Vec<(String,)> = sqlx::query_as(
        "SELECT datname FROM pg_database WHERE datname LIKE 'deper\\_test\\_%' AND pg_get_userbyid(datdba) = current_user",
    )
    .fetch_all(&mut conn)
    .await?;
    for (old,) in existing {
        let created = old.split('_').nth(2).and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| t + STALE_AFTER_SECS < now) {
            // Best effort: another test run may be dropping it at the same time.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)")).execute(&mut conn).await;
        }
    }
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    conn.close().await?;
    Ok(replace_database(base_url, &name))
}

/// `base_url` with its database name replaced by `name` (query parameters kept).
fn replace_database(base_url: &str, name: &str) -> String {
    let (main, query) = match base_url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (base_url, None),
    };
    let scheme_end = main.find("://").map_or(0, |i| i + 3);
    let host_part = match main[scheme_end..].find('/') {
        Some(i) => &main[..scheme_end + i],
        None => main,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(replace_database("postgres://u:p@h:5432/db", "x"), "postgres://u:p@h:5432/x");
        assert_eq!(replace_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(replace_database("postgres://h", "x"), "postgres://h/x");
    }
}
