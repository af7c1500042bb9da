//! What the SQL-over-HTTP warehouses (Snowflake, Databricks, BigQuery) share: each says how
//! it runs a statement and writes names and literals ([`SqlApi`]); the reads a sync makes
//! (counts, append reads, snapshots, previews, change windows) are built once, here, on top.

use wharf_operators::arrow::array::{Array, AsArray};
use wharf_operators::arrow::datatypes::{DataType, Int64Type};
use wharf_operators::watermark::Watermark;

use super::change_source::{ChangeFunction, ChangeSource, ChangeWindow, FunctionStream};
use super::changes::{self, ChangeFormat, Compacted};
use std::sync::Arc;

use super::PartsOf;

use super::{
    EachBatch, Literals, PartRead, Select, SourceRef, TableSchema, Warehouse, WarehouseError,
};

/// What [`SqlApi::run`] runs: `sql`, written by wharf for reading `src` (named in errors);
/// `limit` is the most rows the caller wants (a paging hint).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sql<'a> {
    pub src: &'a SourceRef,
    pub sql: &'a str,
    pub limit: Option<usize>,
}

impl<'a> Sql<'a> {
    /// `sql` reading `src`, at most `limit` rows wanted.
    pub fn new(src: &'a SourceRef, sql: &'a str, limit: Option<usize>) -> Self {
        Sql { src, sql, limit }
    }
}

/// A warehouse reached by sending it SQL over HTTP: what each says about itself; the
/// [`Warehouse`] and [`ChangeFunction`] implementations below are written once on top.
pub(crate) trait SqlApi: std::fmt::Debug + Send + Sync {
    /// The warehouse in messages.
    fn what(&self) -> String;

    /// Signs in and runs a trivial statement.
    fn check(&self) -> Result<(), WarehouseError>;

    /// Columns, types, declared primary key and Arrow schema of `src`.
    fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError>;

    /// `src` as a `FROM` item (a checked table name, or the query as a subquery).
    fn source_sql(&self, src: &SourceRef) -> Result<String, WarehouseError>;

    /// The query listing the tables a sync can read, when not `information_schema.tables`.
    fn tables_query(&self) -> Option<String> {
        None
    }

    /// A quoted column name.
    fn quote(&self, name: &str) -> String {
        super::quote_ident(name)
    }

    /// How the dialect writes an append cursor's literals.
    const LITERALS: Literals;

    /// Runs the statement, handing each result batch to `each` (false stops).
    fn run(&self, sql: Sql<'_>, each: EachBatch<'_>) -> Result<(), WarehouseError>;

    /// `SELECT * FROM <src> <filter>`; BigQuery reads through its Storage Read API instead.
    fn select(&self, query: Select, each: EachBatch<'_>) -> Result<(), WarehouseError> {
        let sql = query.sql(&self.source_sql(query.source)?);
        self.run(Sql::new(query.source, &sql, query.limit), each)
    }

    /// A read of `src`'s rows that `filter` keeps in `count` parts that see one state of it
    /// (see [`Warehouse::read_parts`]); one part unless the warehouse splits it.
    fn read_parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError>
    where
        Self: Sized + 'static,
    {
        Ok(vec![super::whole_read(self, of.src, of.filter)])
    }

    /// The first column of the first row of `sql`, as an integer.
    fn scalar(&self, src: &SourceRef, sql: &str) -> Result<Option<i64>, WarehouseError> {
        let mut n = None;
        self.run(Sql::new(src, sql, Some(1)), &mut |b| {
            if b.num_rows() > 0 {
                n = first_i64(b.column(0).as_ref());
            }
            false
        })?;
        Ok(n)
    }

    /// The warehouse's change output, if it has one wharf reads.
    fn change_format(&self) -> Option<ChangeFormat> {
        None
    }

    /// A query answering the table's current change position (one integer: epoch
    /// microseconds or a table version).
    fn position_sql(&self, _table: &str) -> Option<String> {
        None
    }

    /// The position as a watermark.
    fn position_watermark(&self, v: i64) -> Watermark {
        Watermark::TimestampMicros(v)
    }

    /// The query of the changes of `table` after position `from` up to `to`.
    fn changes_sql(&self, _table: &str, _from: i64, _to: i64) -> Option<String> {
        None
    }

    /// How to turn the change output on for `table`.
    fn changes_hint(&self, _table: &str) -> String {
        String::new()
    }
}

impl<T: SqlApi + 'static> Warehouse for T {
    fn what(&self) -> String {
        SqlApi::what(self)
    }

    fn check(&self) -> Result<(), WarehouseError> {
        SqlApi::check(self)
    }

    fn describe(&self, src: &SourceRef) -> Result<TableSchema, WarehouseError> {
        SqlApi::describe(self, src)
    }

    fn source_item(&self, src: &SourceRef) -> Result<String, WarehouseError> {
        self.source_sql(src)
    }

    fn tables_query(&self) -> String {
        SqlApi::tables_query(self).unwrap_or_else(|| super::TABLES_QUERY.into())
    }

    fn ident(&self, name: &str) -> String {
        self.quote(name)
    }

    fn literal(&self, after: Watermark, zone: bool) -> String {
        Self::LITERALS.write(after, zone)
    }

    fn select(&self, query: Select, each: EachBatch<'_>) -> Result<(), WarehouseError> {
        SqlApi::select(self, query, each)
    }

    fn read_parts(self: Arc<Self>, of: PartsOf<'_>) -> Result<Vec<PartRead>, WarehouseError> {
        SqlApi::read_parts(self, of)
    }

    fn count_where(&self, src: &SourceRef, filter: &str) -> Result<u64, WarehouseError> {
        let sql = format!("SELECT COUNT(*) FROM {} {filter}", self.source_sql(src)?);
        Ok(self.scalar(src, &sql)?.unwrap_or(0).max(0) as u64)
    }

    fn change_source<'a>(
        &'a self,
        _sync: &str,
        src: &SourceRef,
        key: &[String],
    ) -> Option<Box<dyn ChangeSource + 'a>> {
        self.change_format()?;
        Some(Box::new(FunctionStream::new(self, self, src, key)))
    }
}

impl<T: SqlApi> ChangeFunction for T {
    fn change_start(&self, src: &SourceRef) -> Result<Result<Watermark, String>, WarehouseError> {
        let SourceRef::Table(table) = src else {
            return Ok(Err("a query has no change output; name a table".into()));
        };
        let (Some(_), Some(position)) = (self.change_format(), self.position_sql(table)) else {
            return Ok(Err("this warehouse has no change output wharf reads".into()));
        };
        let refused = |e: WarehouseError| match e {
            e @ (WarehouseError::Unavailable { .. } | WarehouseError::Open { .. }) => Err(e),
            e => Ok(Err(format!("{e}; {}", self.changes_hint(table)))),
        };
        let at = match self.scalar(src, &position) {
            Ok(Some(at)) => at,
            Ok(None) => return Ok(Err("the change position query answered nothing".into())),
            Err(e) => return refused(e),
        };
        // The window just before the position: a valid range everywhere (Databricks refuses a
        // start version past the end one).
        let Some(probe) = self.changes_sql(table, at - 1, at) else {
            return Ok(Err("this warehouse has no change output wharf reads".into()));
        };
        let sql = format!("{probe} LIMIT 0");
        match self.run(Sql::new(src, &sql, Some(0)), &mut |_| true) {
            Ok(()) => Ok(Ok(self.position_watermark(at))),
            Err(e) => refused(e),
        }
    }

    fn change_position(&self, src: &SourceRef) -> Result<Watermark, WarehouseError> {
        let position = match src {
            SourceRef::Table(t) => self.position_sql(t),
            SourceRef::Query(_) => None,
        };
        let unsupported = || WarehouseError::Query {
            source_ref: src.clone(),
            message: "no change position here".into(),
            transient: false,
        };
        let sql = position.ok_or_else(unsupported)?;
        let v = self.scalar(src, &sql)?.ok_or_else(unsupported)?;
        Ok(self.position_watermark(v))
    }

    fn read_changes(&self, window: &ChangeWindow<'_>) -> Result<Compacted, WarehouseError> {
        let ChangeWindow { src, key, from, to } = *window;
        let qerr = |message: String| WarehouseError::Query {
            source_ref: src.clone(),
            message,
            transient: false,
        };
        let (SourceRef::Table(table), Some(format)) = (src, self.change_format()) else {
            return Err(qerr("no change output here".into()));
        };
        let (from, to) = (watermark_value(from), watermark_value(to));
        if to <= from {
            return Ok(Compacted::default());
        }
        let sql = self
            .changes_sql(table, from, to)
            .ok_or_else(|| qerr("no change output here".into()))?;
        let mut batches = Vec::new();
        self.run(Sql::new(src, &sql, None), &mut |b| {
            batches.push(b);
            true
        })?;
        changes::compact(&batches, format, key).map_err(qerr)
    }
}

/// A change position's number.
fn watermark_value(w: Watermark) -> i64 {
    match w {
        Watermark::Integer(v) | Watermark::TimestampMicros(v) => v,
        Watermark::Date(d) => i64::from(d),
    }
}

/// The first value of `col` as an integer (counts, positions): Int64, any other integer or
/// decimal type castable to Int64, or digits in a string.
pub fn first_i64(col: &dyn Array) -> Option<i64> {
    if col.is_empty() || col.is_null(0) {
        return None;
    }
    if let Some(c) = col.as_primitive_opt::<Int64Type>() {
        return Some(c.value(0));
    }
    let cast = wharf_operators::arrow::compute::cast(&col.slice(0, 1), &DataType::Int64).ok()?;
    let c = cast.as_primitive_opt::<Int64Type>()?;
    (!c.is_null(0)).then(|| c.value(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, WarehouseConfig};
    use crate::warehouse::{bigquery, databricks, snowflake};
    use std::sync::Arc;
    use wharf_operators::arrow::array::{Decimal128Array, StringArray};

    /// The connector that `toml` configures as warehouse `w`, taken out by `from`.
    fn built<T>(toml: &str, from: fn(&WarehouseConfig, &Config) -> Option<T>) -> T {
        let c = Config::parse(toml, "w.toml").unwrap();
        from(&c.warehouses["w"], &c).expect("the warehouse kind the test configures")
    }

    #[test]
    fn change_function_queries_per_warehouse() {
        let sf = built("[warehouses.w]\ntype = \"snowflake\"\naccount = \"a\"\nuser = \"u\"\npassword = \"p\"\ndatabase = \"DB\"\n", |w, c| match w {
            WarehouseConfig::Snowflake(w) => Some(snowflake::from_config("w", w, &c.base_dir)),
            _ => None,
        });
        assert_eq!(
            sf.changes_sql("USERS", 10, 20).unwrap(),
            "SELECT * FROM USERS CHANGES(INFORMATION => DEFAULT) AT(TIMESTAMP => TO_TIMESTAMP_LTZ(10, 6)) END(TIMESTAMP => TO_TIMESTAMP_LTZ(20, 6))"
        );
        assert!(
            sf.changes_sql("users; DROP", 1, 2).is_none(),
            "checked name"
        );
        let dbx = built("[warehouses.w]\ntype = \"databricks\"\nhost = \"https://h\"\ntoken = \"t\"\nwarehouse_id = \"w\"\n", |w, _| match w {
            WarehouseConfig::Databricks(w) => Some(databricks::from_config("w", w)),
            _ => None,
        });
        assert_eq!(
            dbx.changes_sql("cat.s.it's", 4, 9).unwrap(),
            "SELECT * FROM table_changes('cat.s.it''s', 5, 9)"
        );
        assert_eq!(
            dbx.position_watermark(9),
            Watermark::Integer(9),
            "Delta versions"
        );
        let bq = built("[warehouses.w]\ntype = \"bigquery\"\nproject = \"p\"\ndataset = \"d\"\naccess_token = \"t\"\n", |w, c| match w {
            WarehouseConfig::Bigquery(w) => Some(bigquery::from_config("w", w, &c.base_dir)),
            _ => None,
        });
        assert_eq!(
            bq.changes_sql("users", 1, 2).unwrap(),
            "SELECT * FROM CHANGES(TABLE `p.d.users`, TIMESTAMP_MICROS(1), TIMESTAMP_MICROS(2))"
        );
        assert!(bq.position_sql("users").unwrap().contains("660000000"));
        // Append cursors: the literals each dialect writes.
        let zoned = wharf_operators::arrow::datatypes::DataType::Timestamp(
            wharf_operators::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        );
        assert_eq!(
            sf.cursor_after("\"T\"", &zoned, Watermark::TimestampMicros(1_500_000)),
            "\"T\" > '1970-01-01 00:00:01.500000 +00:00'::TIMESTAMP_TZ"
        );
        assert_eq!(
            bq.literal(Watermark::TimestampMicros(0), false),
            "DATETIME '1970-01-01 00:00:00.000000'"
        );
        assert_eq!(bq.literal(Watermark::Date(1), false), "DATE '1970-01-02'");
        assert_eq!(dbx.literal(Watermark::Integer(-3), true), "-3");
    }

    #[test]
    fn first_values_of_the_types_warehouses_answer_with() {
        let dec = Decimal128Array::from(vec![42_000])
            .with_precision_and_scale(38, 3)
            .unwrap();
        assert_eq!(first_i64(&dec), Some(42));
        assert_eq!(first_i64(&StringArray::from(vec!["17"])), Some(17));
        assert_eq!(first_i64(&StringArray::from(vec![None::<&str>])), None);
        let empty: Arc<dyn Array> = Arc::new(StringArray::from(Vec::<&str>::new()));
        assert_eq!(first_i64(empty.as_ref()), None);
    }
}
