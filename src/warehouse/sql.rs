//! What the SQL-over-HTTP warehouses (Snowflake, Databricks, BigQuery) share: each says how
//! it runs a statement and writes names and literals ([`SqlApi`]); the reads a sync makes
//! (counts, append reads, snapshots, previews, change windows) are built once, here, on top.

use wharf_operators::arrow::array::{Array, AsArray, RecordBatch};
use wharf_operators::arrow::datatypes::{DataType, Int64Type};
use wharf_operators::watermark::Watermark;

use super::changes::{self, ChangeFormat, Compacted};
use super::{Literals, SourceRef, WarehouseError};

/// A warehouse reached by sending it SQL.
pub(crate) trait SqlApi {
    /// `src` as a `FROM` item (a checked table name, or the query as a subquery).
    fn source_sql(&self, src: &SourceRef) -> Result<String, WarehouseError>;

    /// A quoted column name.
    fn ident(&self, name: &str) -> String;

    /// How the dialect writes an append cursor's literals.
    fn literals(&self) -> Literals;

    /// Runs `sql`, handing each result batch to `each` (false stops); `limit` is the most rows
    /// the caller wants (a paging hint).
    fn run(
        &self,
        src: &SourceRef,
        sql: &str,
        limit: Option<usize>,
        each: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<(), WarehouseError>;

    /// The first column of the first row of `sql`, as an integer.
    fn scalar(&self, src: &SourceRef, sql: &str) -> Result<Option<i64>, WarehouseError> {
        let mut n = None;
        self.run(src, sql, Some(1), &mut |b| {
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

    /// Rows of `src`.
    fn count(&self, src: &SourceRef) -> Result<u64, WarehouseError> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.source_sql(src)?);
        Ok(self.scalar(src, &sql)?.unwrap_or(0).max(0) as u64)
    }

    /// `WHERE <cursor> > <after>` (empty on a first run).
    fn after_clause(
        &self,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
    ) -> String {
        super::after_clause(&self.ident(cursor), cursor_type, after, &self.literals())
    }

    /// Rows an append run would read.
    fn count_after(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
    ) -> Result<u64, WarehouseError> {
        let sql = format!(
            "SELECT COUNT(*) FROM {} {}",
            self.source_sql(src)?,
            self.after_clause(cursor, cursor_type, after)
        );
        Ok(self.scalar(src, &sql)?.unwrap_or(0).max(0) as u64)
    }

    /// Streams the rows whose `cursor` is past `after`.
    fn read_after(
        &self,
        src: &SourceRef,
        cursor: &str,
        cursor_type: &DataType,
        after: Option<Watermark>,
        each: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<(), WarehouseError> {
        let sql = format!(
            "SELECT * FROM {} {}",
            self.source_sql(src)?,
            self.after_clause(cursor, cursor_type, after)
        );
        self.run(src, &sql, None, each)
    }

    /// Streams the whole of `src`.
    fn read_snapshot(
        &self,
        src: &SourceRef,
        each: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<(), WarehouseError> {
        let sql = format!("SELECT * FROM {}", self.source_sql(src)?);
        self.run(src, &sql, None, each)
    }

    /// The first `limit` rows of `src`.
    fn preview(&self, src: &SourceRef, limit: usize) -> Result<Vec<RecordBatch>, WarehouseError> {
        let sql = format!("SELECT * FROM {} LIMIT {limit}", self.source_sql(src)?);
        let mut out = Vec::new();
        self.run(src, &sql, Some(limit), &mut |b| {
            out.push(b);
            true
        })?;
        Ok(out)
    }

    /// `src` reduced to the latest row per `key` by `order`.
    fn latest_per_key(&self, src: &SourceRef, key: &[String], order: &str) -> SourceRef {
        let key: Vec<String> = key.iter().map(|k| self.ident(k)).collect();
        let from = self
            .source_sql(src)
            .unwrap_or_else(|_| "wharf_invalid_table".into());
        super::latest_per_key_sql(&from, &key, &self.ident(order))
    }

    /// The current change position of `src` when its change output can be read, else why
    /// not (a table without change tracking, a query, an emulator without the function).
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
        match self.run(src, &format!("{probe} LIMIT 0"), Some(0), &mut |_| true) {
            Ok(()) => Ok(Ok(self.position_watermark(at))),
            Err(e) => refused(e),
        }
    }

    /// The table's current change position.
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

    /// The changes of `src` after `from` up to `to`, compacted by `key`.
    fn read_changes(
        &self,
        src: &SourceRef,
        key: &[String],
        from: Watermark,
        to: Watermark,
    ) -> Result<Compacted, WarehouseError> {
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
        self.run(src, &sql, None, &mut |b| {
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
    use std::sync::Arc;
    use wharf_operators::arrow::array::{Decimal128Array, StringArray};

    fn warehouse(toml: &str) -> super::super::Warehouse {
        let config = crate::config::Config::parse(toml, "w.toml").unwrap();
        super::super::Warehouse::from_config(&config, "w").unwrap()
    }

    fn api(w: &super::super::Warehouse) -> &dyn SqlApi {
        match w.kind() {
            super::super::Kind::Sql(a) => a,
            _ => panic!("not a SQL warehouse"),
        }
    }

    #[test]
    fn change_function_queries_per_warehouse() {
        let sf = warehouse(
            "[warehouses.w]\ntype = \"snowflake\"\naccount = \"a\"\nuser = \"u\"\npassword = \"p\"\ndatabase = \"DB\"\n",
        );
        assert_eq!(
            api(&sf).changes_sql("USERS", 10, 20).unwrap(),
            "SELECT * FROM USERS CHANGES(INFORMATION => DEFAULT) AT(TIMESTAMP => TO_TIMESTAMP_LTZ(10, 6)) END(TIMESTAMP => TO_TIMESTAMP_LTZ(20, 6))"
        );
        assert!(
            api(&sf).changes_sql("users; DROP", 1, 2).is_none(),
            "checked name"
        );
        let dbx = warehouse(
            "[warehouses.w]\ntype = \"databricks\"\nhost = \"https://h\"\ntoken = \"t\"\nwarehouse_id = \"w\"\n",
        );
        assert_eq!(
            api(&dbx).changes_sql("cat.s.it's", 4, 9).unwrap(),
            "SELECT * FROM table_changes('cat.s.it''s', 5, 9)"
        );
        assert_eq!(
            api(&dbx).position_watermark(9),
            Watermark::Integer(9),
            "Delta versions"
        );
        let bq = warehouse(
            "[warehouses.w]\ntype = \"bigquery\"\nproject = \"p\"\ndataset = \"d\"\naccess_token = \"t\"\n",
        );
        assert_eq!(
            api(&bq).changes_sql("users", 1, 2).unwrap(),
            "SELECT * FROM CHANGES(TABLE `p.d.users`, TIMESTAMP_MICROS(1), TIMESTAMP_MICROS(2))"
        );
        assert!(api(&bq)
            .position_sql("users")
            .unwrap()
            .contains("660000000"));
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
