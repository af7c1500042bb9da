//! PostgreSQL for the tests: a warehouse handle on a server of this machine as `postgres`
//! (trust auth, no TLS), and statements run on it.

use wharf::warehouse::postgres::{PgSettings, PostgresWarehouse, SslMode};
use wharf::warehouse::SourceRef;

/// Database `db` of the server on 127.0.0.1:`port`, as `postgres`, without TLS.
pub fn warehouse(port: u16, db: &str) -> PostgresWarehouse {
    PostgresWarehouse::new(
        "pg",
        PgSettings {
            sslmode: SslMode::Disable,
            ..PgSettings::new("127.0.0.1", port, db, "postgres")
        },
    )
}

/// `[warehouses.pg]` of a config: database `db` of the server on 127.0.0.1:5432 as
/// `postgres`, without TLS.
pub fn warehouse_toml(db: &str) -> String {
    format!(
        r#"[warehouses.pg]
type = "postgres"
host = "127.0.0.1"
database = "{db}"
user = "postgres"
sslmode = "disable"
"#
    )
}

/// Runs `sql` (statements, no transaction around them) on database `db` of the server on
/// 127.0.0.1:`port`, panicking on failure.
pub fn exec(port: u16, db: &str, sql: &str) {
    let w = warehouse(port, db);
    w.block(async {
        let c = w.connect().await?;
        c.batch_execute(sql)
            .await
            .map_err(|e| w.err(&SourceRef::Query(sql.to_string()), e))
    })
    .unwrap_or_else(|e| panic!("sql failed: {e}"));
}
