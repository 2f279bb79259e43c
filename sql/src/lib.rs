//! SQL over tidings' tracking tables, by DataFusion.
//!
//! [`Tracking::open`] registers the job's Parquet tables `events` and `dead_letters` (Hive
//! partitions `date=YYYY-MM-DD` become a `date` column) with their schemas from
//! [`tidings_model::schema`], so a job that has written nothing yet still answers with empty
//! tables. A tracking directory that does not exist is an error, never 0 rows; a file that is
//! not Parquet is named in the error, or skipped with a warning ([`Corrupt::Skip`]).
//! [`format`] renders results as a table, CSV or JSON lines.

pub mod compacted;
pub mod reports;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
pub use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tidings_model::schema::{dead_letters_schema, events_schema};

/// Errors of the SQL side.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// DataFusion refused the query or failed to run it.
    #[error("{0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// Results could not be rendered.
    #[error("cannot format results: {0}")]
    Format(#[from] datafusion::arrow::error::ArrowError),
    /// The tracking directory is unusable.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The tracking directory does not exist (or is not a directory).
    #[error(
        "{path}: no such tracking directory ({why}); give the job's tracking.dir (has the job run yet?)"
    )]
    Missing {
        /// The directory.
        path: String,
        /// What is there instead.
        why: String,
    },
    /// Files of the tables are not readable Parquet.
    #[error(
        "{}: not a readable Parquet file ({why}){}; {}",
        .files.first().map(String::as_str).unwrap_or("?"),
        if .files.len() > 1 { format!(" (and {} more: {})", .files.len() - 1, .files[1..].join(", ")) } else { String::new() },
        if *.skipping { "written since the tables were opened with --skip-corrupt: open them again to leave it out" } else { "move it away or pass --skip-corrupt" }
    )]
    Corrupt {
        /// The files, by path.
        files: Vec<String>,
        /// Why the first cannot be read.
        why: String,
        /// The tables were opened with [`Corrupt::Skip`] (the files came after).
        skipping: bool,
    },
}

/// What to do with a file of the tables that is not readable Parquet (a torn write, a file
/// copied in by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corrupt {
    /// A query that reads it fails, naming it.
    #[default]
    Fail,
    /// Leave it out of every table; [`Tracking::skipped`] names it.
    Skip,
}

/// Output formats of `tidings sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A boxed text table.
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per row.
    Json,
}

/// A session with the tracking tables registered.
pub struct Tracking {
    ctx: SessionContext,
    /// The local directory, to name unreadable files when a query fails.
    dir: Option<PathBuf>,
    /// Files left out ([`Corrupt::Skip`]), with why.
    skipped: Vec<(PathBuf, String)>,
    /// Opened with [`Corrupt::Skip`].
    skipping: bool,
    /// The tables that had no file when opened (empty for good), and where their files go.
    placeholders: Vec<&'static str>,
    location: String,
}

const TABLES: [&str; 2] = ["events", "dead_letters"];

/// Every `.parquet` file under `dir`, sorted.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let keep = |p: &Path| p.extension().is_some_and(|x| x == "parquet");
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if keep(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Why `path` is not a readable Parquet file (its footer and metadata are read), or `None`.
pub fn unreadable(path: &Path) -> Option<String> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(e.to_string()),
    };
    match SerializedFileReader::new(file) {
        Ok(r) => {
            let _ = r.metadata().num_row_groups();
            None
        }
        Err(e) => Some(e.to_string()),
    }
}

impl Tracking {
    /// Registers `events` and `dead_letters` under `dir`, which must exist; a query that
    /// meets a file that is not Parquet fails naming it.
    pub async fn open(dir: &Path) -> Result<Tracking, SqlError> {
        Tracking::open_with(dir, Corrupt::Fail).await
    }

    /// Registers the tables under `dir`; `corrupt` says what to do with unreadable files
    /// ([`Corrupt::Skip`] reads every file's footer first).
    pub async fn open_with(dir: &Path, corrupt: Corrupt) -> Result<Tracking, SqlError> {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SqlError::Missing {
                    path: dir.display().to_string(),
                    why: "it is a file".into(),
                });
            }
            Err(e) => {
                return Err(SqlError::Missing {
                    path: dir.display().to_string(),
                    why: e.to_string(),
                });
            }
        }
        let dir = dir.canonicalize().map_err(|source| SqlError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut skipped = Vec::new();
        if corrupt == Corrupt::Skip {
            for table in TABLES {
                for f in parquet_files(&dir.join(table)) {
                    if let Some(why) = unreadable(&f) {
                        skipped.push((f, why));
                    }
                }
            }
        }
        // Left out by every listing of the session: files written since are read, and a file
        // the compactor deletes is gone from the listing (the tracking directory is never
        // written).
        let mut left_out = BTreeSet::new();
        for (f, _) in &skipped {
            let p = object_store::path::Path::from_absolute_path(f).map_err(|e| SqlError::Io {
                path: f.display().to_string(),
                source: std::io::Error::other(e),
            })?;
            left_out.insert(p);
        }
        let ctx = session_leaving_out(left_out)?;
        let mut placeholders = Vec::new();
        // As a URL of its own (a `#` or `?` in the path is escaped, not a fragment or a query
        // that would cut the path short and list nothing: 0 rows, no error).
        let location = url::Url::from_directory_path(&dir)
            .map(String::from)
            .unwrap_or_else(|()| format!("file://{}", dir.display()));
        for (table, schema) in [
            ("events", events_schema()),
            ("dead_letters", dead_letters_schema()),
        ] {
            if dir.join(table).is_dir() {
                register(&ctx, table, &location, &schema).await?;
            } else {
                // Nothing written yet: an empty table of the same columns.
                ctx.register_table(table, empty_table(&schema)?)?;
                placeholders.push(table);
            }
        }
        Ok(Tracking {
            ctx,
            dir: Some(dir),
            skipped,
            skipping: corrupt == Corrupt::Skip,
            placeholders,
            location,
        })
    }

    /// Whether a query now would miss files: a table that had no file when the tables were
    /// opened (it stays empty) has one now; open them again. (Every query lists the files of
    /// the others anew.)
    pub async fn stale(&self) -> bool {
        for table in &self.placeholders {
            let now = match &self.dir {
                Some(dir) => dir.join(table).is_dir(),
                None => has_files(&self.ctx, &self.location, table)
                    .await
                    .unwrap_or(true),
            };
            if now {
                return true;
            }
        }
        false
    }

    /// The files left out of the tables, with why (empty unless opened with
    /// [`Corrupt::Skip`]).
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// Registers the tables under a tracking location given as an object-store URL
    /// (`file:///var/tidings/tracking`), read through the local filesystem.
    pub async fn open_url(location: &str) -> Result<Tracking, SqlError> {
        if !location.starts_with("file://") {
            return Err(SqlError::Query(
                datafusion::error::DataFusionError::Configuration(format!(
                    "{location}: give a file:// URL, or open an object store with open_store"
                )),
            ));
        }
        Tracking::registered(session()?, location).await
    }

    /// Registers the tables under `location` (`s3://bucket/prefix`) of `store`, the store of
    /// `bucket_url` (`s3://bucket`). Listings hide replaced files as for a local directory; a
    /// table with no file yet is empty.
    pub async fn open_store(
        location: &str,
        bucket_url: &str,
        store: Arc<dyn object_store::ObjectStore>,
    ) -> Result<Tracking, SqlError> {
        let ctx = session()?;
        let url = url::Url::parse(bucket_url).map_err(|e| {
            SqlError::Query(datafusion::error::DataFusionError::Configuration(format!(
                "{bucket_url}: {e}"
            )))
        })?;
        ctx.register_object_store(&url, Arc::new(compacted::Compacted::from_arc(store)));
        Tracking::registered(ctx, location).await
    }

    async fn registered(ctx: SessionContext, location: &str) -> Result<Tracking, SqlError> {
        let mut placeholders = Vec::new();
        for (table, schema) in [
            ("events", events_schema()),
            ("dead_letters", dead_letters_schema()),
        ] {
            match register(&ctx, table, location, &schema).await {
                Ok(()) => {}
                // Nothing written yet (an object store has no empty directories).
                Err(_) if !has_files(&ctx, location, table).await? => {
                    ctx.register_table(table, empty_table(&schema)?)?;
                    placeholders.push(table);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Tracking {
            ctx,
            dir: None,
            skipped: Vec::new(),
            skipping: false,
            placeholders,
            location: location.to_string(),
        })
    }

    /// Runs one statement that only reads (no DDL, no DML, no `COPY`, no `SET`): what a
    /// service lets its users type. At most `limit` rows are produced (the plan stops there),
    /// and a statement running longer than `within` is cancelled.
    pub async fn query_read_only(
        &self,
        sql: &str,
        limit: usize,
        within: std::time::Duration,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        let options = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let run = async {
            self.ctx
                .sql_with_options(sql, options)
                .await?
                .limit(0, Some(limit))
                .map(collected)?
                .await
        };
        match tokio::time::timeout(within, run).await {
            Ok(result) => result.map_err(|e| self.name_corrupt(e)),
            Err(_) => Err(SqlError::Query(
                datafusion::error::DataFusionError::Execution(format!(
                    "the statement ran longer than {} s and was cancelled; narrow it (WHERE date = ..., LIMIT)",
                    within.as_secs()
                )),
            )),
        }
    }

    /// The event rows of a receiver (in any of `receivers`' forms) or a message, oldest
    /// first; the newest `limit` when given (what support asks about is today's): `time`, `event_time`,
    /// `message_id`, `template_id`, `channel`, `receiver`, `state`, `state_code`, `reason`,
    /// `biz_id`. Values are matched exactly (no SQL is built from them).
    pub async fn trace(
        &self,
        receivers: &[String],
        message_id: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        use datafusion::prelude::{col, lit};
        let mut df = self.ctx.table("events").await?;
        if !receivers.is_empty() {
            let any = receivers.iter().map(|r| lit(r.as_str())).collect();
            df = df.filter(col("receiver").in_list(any, false))?;
        }
        if let Some(m) = message_id {
            df = df.filter(col("message_id").eq(lit(m)))?;
        }
        let df = df.select_columns(&[
            "time",
            "event_time",
            "message_id",
            "template_id",
            "template_version",
            "channel",
            "receiver",
            "state",
            "state_code",
            "reason",
            "biz_id",
        ])?;
        // A total order (rows of one `time` are many when a run stamps them alike, as with
        // `--now`): the newest `limit` are then the last `limit` of the whole trace.
        let order = |ascending| {
            ["time", "state_code", "receiver", "event_time", "message_id"]
                .map(|c| col(c).sort(ascending, false))
                .to_vec()
        };
        let df = match limit {
            None => df.sort(order(true))?,
            Some(n) => df
                .sort(order(false))?
                .limit(0, Some(n))?
                .sort(order(true))?,
        };
        collected(df).await.map_err(|e| self.name_corrupt(e))
    }

    /// Runs one statement and collects its result. A failure caused by a file that is not
    /// Parquet names the file.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
        self.query_at_most(sql, None).await
    }

    /// [`Tracking::query`], its first `limit` rows when given (the plan stops there).
    async fn query_at_most(
        &self,
        sql: &str,
        limit: Option<usize>,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        let result = async { collected(self.ctx.sql(sql).await?.limit(0, limit)?).await }.await;
        result.map_err(|e| self.name_corrupt(e))
    }

    /// `e`, or the unreadable files of the tables when there are any (DataFusion's own
    /// message does not say which file it could not read).
    fn name_corrupt(&self, e: datafusion::error::DataFusionError) -> SqlError {
        use datafusion::error::DataFusionError as E;
        let Some(dir) = &self.dir else {
            return SqlError::Query(e);
        };
        // Only a failure to read can be a file's; a mistake in the statement, or its failure
        // as it runs (a cast, a division by zero, memory), is the statement's whatever the
        // files hold, and the files are not read again to say so.
        let reading = match e.find_root() {
            E::ParquetError(_) | E::IoError(_) | E::ObjectStore(_) | E::External(_) => true,
            E::ArrowError(a, _) => matches!(
                **a,
                datafusion::arrow::error::ArrowError::ParquetError(_)
                    | datafusion::arrow::error::ArrowError::IoError(..)
                    | datafusion::arrow::error::ArrowError::ExternalError(_)
            ),
            _ => false,
        };
        if !reading {
            return SqlError::Query(e);
        }
        let mut files = Vec::new();
        let mut why = String::new();
        for table in TABLES {
            // A file left out (`--skip-corrupt`) is not what the query failed on.
            for f in parquet_files(&dir.join(table))
                .into_iter()
                .filter(|f| !self.skipped.iter().any(|(s, _)| s == f))
            {
                if let Some(w) = unreadable(&f) {
                    if files.is_empty() {
                        why = w;
                    }
                    files.push(f.display().to_string());
                }
            }
        }
        if files.is_empty() {
            SqlError::Query(e)
        } else {
            SqlError::Corrupt {
                files,
                why,
                skipping: self.skipping,
            }
        }
    }

    /// Runs a report with its parameters; its first `limit` rows, when given.
    pub async fn report(
        &self,
        report: &reports::Report,
        params: &reports::Params,
        limit: Option<usize>,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        let sql = report.render(params).map_err(|e| {
            SqlError::Query(datafusion::error::DataFusionError::Plan(e.to_string()))
        })?;
        self.query_at_most(&sql, limit).await
    }

    /// The registered tables, sorted.
    pub fn tables(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ctx
            .catalog("datafusion")
            .and_then(|c| c.schema("public"))
            .map(|s| s.table_names())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A table's columns: name, type, nullable.
    pub async fn schema(&self, table: &str) -> Result<Vec<(String, String, bool)>, SqlError> {
        let df = self.ctx.table(table).await?;
        Ok(df
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable()))
            .collect())
    }

    /// The DataFusion session, for callers that need more.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
}

/// The memory every query of this process draws from ([`limit_memory`]); unbounded unless set.
static MEMORY_POOL: std::sync::OnceLock<Arc<dyn datafusion::execution::memory_pool::MemoryPool>> =
    std::sync::OnceLock::new();

/// Bounds the memory of every query this process runs from now on to `bytes`: sorts and
/// aggregations spill to disk beyond it, and a query that cannot fails with DataFusion's
/// "Resources exhausted" instead of growing the process (`tidings serve`, whose console's
/// queries share the process with its send API, sets it). The first call's bound holds.
pub fn limit_memory(bytes: usize) {
    // One pool for every session (one per job the console reads), so the bound is the
    // process's, not each session's.
    let _ = MEMORY_POOL.set(Arc::new(
        datafusion::execution::memory_pool::GreedyMemoryPool::new(bytes),
    ));
}

/// A session whose local files are read through [`compacted::Compacted`]: every listing
/// leaves out the files a compacted file in the same listing replaces.
fn session() -> Result<SessionContext, SqlError> {
    session_leaving_out(BTreeSet::new())
}

/// [`session`], its listings of local files leaving `left_out` out too.
fn session_leaving_out(
    left_out: BTreeSet<object_store::path::Path>,
) -> Result<SessionContext, SqlError> {
    // Every query lists the files anew (DataFusion keeps a listing for good by default): a
    // shell's later queries see the files written since, and none a compaction has removed.
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0),
        );
    if let Some(pool) = MEMORY_POOL.get() {
        runtime = runtime.with_memory_pool(pool.clone());
    }
    let runtime = runtime.build_arc()?;
    let ctx = SessionContext::new_with_config_rt(Default::default(), runtime);
    let local = object_store::local::LocalFileSystem::new();
    let url = url::Url::parse("file://").map_err(|e| {
        SqlError::Query(datafusion::error::DataFusionError::Configuration(
            e.to_string(),
        ))
    })?;
    let local = compacted::Compacted::new(local).leaving_out(left_out);
    ctx.register_object_store(&url, Arc::new(local));
    Ok(ctx)
}

/// An empty table of `schema` and the `date` partition column.
fn empty_table(
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<Arc<datafusion::datasource::MemTable>, SqlError> {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
        "date",
        DataType::Utf8,
        false,
    )));
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    Ok(Arc::new(datafusion::datasource::MemTable::try_new(
        schema,
        vec![vec![]],
    )?))
}

/// Whether `table` under `location` holds any object (through the session's store).
async fn has_files(ctx: &SessionContext, location: &str, table: &str) -> Result<bool, SqlError> {
    use futures::StreamExt;
    let url = datafusion::datasource::listing::ListingTableUrl::parse(format!(
        "{}/{table}/",
        location.trim_end_matches('/')
    ))?;
    let store = ctx.runtime_env().object_store(&url)?;
    let first = store.list(Some(url.prefix())).next().await;
    match first {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(SqlError::Query(e.into())),
    }
}

/// Registers one Parquet table under `location` (a `file://` URL of the tracking directory).
async fn register(
    ctx: &SessionContext,
    table: &str,
    location: &str,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<(), SqlError> {
    let url = format!("{}/{table}/", location.trim_end_matches('/'));
    let options = ParquetReadOptions::default()
        .schema(schema)
        .table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
    ctx.register_parquet(table, &url, options).await?;
    Ok(())
}

/// Renders batches in a format.
/// `batches` as `{"columns": [...], "rows": [[...], ...]}` (timestamps as RFC 3339 text, nulls
/// as `null`), at most `limit` rows; `"truncated": true` when there were more.
pub fn json_table(batches: &[RecordBatch], limit: usize) -> Result<serde_json::Value, SqlError> {
    let batches = &unique_names(batches)?;
    let columns: Vec<String> = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    // Only the rows shown (and one to tell there are more) are written out.
    let mut kept = Vec::new();
    let mut room = limit.saturating_add(1);
    for b in batches {
        if room == 0 {
            break;
        }
        let n = b.num_rows().min(room);
        kept.push(b.slice(0, n));
        room -= n;
    }
    let text = format(&kept, Format::Json)?;
    let mut rows = Vec::new();
    let mut truncated = false;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if rows.len() == limit {
            truncated = true;
            break;
        }
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).unwrap_or_default();
        rows.push(serde_json::Value::Array(
            columns
                .iter()
                .map(|c| object.get(c).cloned().unwrap_or(serde_json::Value::Null))
                .collect(),
        ));
    }
    Ok(serde_json::json!({"columns": columns, "rows": rows, "truncated": truncated}))
}

/// Collects `df`; a result without rows is one empty batch of its columns (DataFusion may
/// give none), so it keeps its header: in CSV, in a table, in the console's `columns`.
async fn collected(
    df: datafusion::dataframe::DataFrame,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let schema = df.schema().inner().clone();
    let batches = df.collect().await?;
    Ok(if batches.is_empty() {
        vec![RecordBatch::new_empty(schema)]
    } else {
        batches
    })
}

pub fn format(batches: &[RecordBatch], format: Format) -> Result<String, SqlError> {
    match format {
        Format::Table => {
            Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string())
        }
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                for b in &unique_names(batches)? {
                    w.write(b)?;
                }
                w.finish()?;
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
    }
}

/// `batches` with each column name that repeats an earlier one (`SELECT a.x, b.x` over a
/// join: both named `x`) made unique as `x_2`, `x_3`, ...: a JSON object keeps only one of
/// equal keys, so the other column's values were lost.
fn unique_names(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, SqlError> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let schema = first.schema();
    // A generated name is never one the result already has (`x, x, x_2` → `x, x_3, x_2`).
    let named: BTreeSet<&String> = schema.fields().iter().map(|f| f.name()).collect();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut renamed = false;
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut name = f.name().clone();
            let mut n = 1;
            while taken.contains(&name) || (n > 1 && named.contains(&name)) {
                n += 1;
                name = format!("{}_{n}", f.name());
                renamed = true;
            }
            taken.insert(name.clone());
            f.as_ref().clone().with_name(name)
        })
        .collect();
    if !renamed {
        return Ok(batches.to_vec());
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    batches
        .iter()
        .map(|b| Ok(RecordBatch::try_new(schema.clone(), b.columns().to_vec())?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table for the console is cut at its limit across batches, and says so.
    #[test]
    fn a_json_table_stops_at_its_limit() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = |from: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(from..from + 3))],
            )
            .unwrap()
        };
        let batches = [batch(0), batch(3), batch(6)];
        let t = json_table(&batches, 4).unwrap();
        assert_eq!(t["rows"], serde_json::json!([[0], [1], [2], [3]]));
        assert_eq!(t["truncated"], true);
        let t = json_table(&batches, 9).unwrap();
        assert_eq!(
            (t["rows"].as_array().unwrap().len(), &t["truncated"]),
            (9, &serde_json::json!(false))
        );
    }

    /// Two columns of one name keep their own values in JSON, as `x` and `x_3` (the result
    /// has an `x_2` of its own).
    #[test]
    fn columns_of_one_name_keep_their_values_in_json() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{Field, Schema};
        let field = |n: &str| Field::new(n, DataType::Int64, false);
        let schema = Schema::new(vec![field("x"), field("x"), field("x_2")]);
        let column = |v: i64| Arc::new(Int64Array::from(vec![v])) as _;
        let batch =
            RecordBatch::try_new(Arc::new(schema), vec![column(1), column(2), column(3)]).unwrap();
        let table = json_table(std::slice::from_ref(&batch), 10).unwrap();
        assert_eq!(table["columns"], serde_json::json!(["x", "x_3", "x_2"]));
        assert_eq!(table["rows"], serde_json::json!([[1, 2, 3]]));
        let lines = format(&[batch], Format::Json).unwrap();
        assert_eq!(lines.trim(), r#"{"x":1,"x_3":2,"x_2":3}"#);
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_missing_directory_is_an_error_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/tracking");
        let e = rt().block_on(Tracking::open(&missing)).err().unwrap();
        assert!(matches!(e, SqlError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("no/tracking"), "{e}");
        assert!(!missing.exists());
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = rt().block_on(Tracking::open(&file)).err().unwrap();
        assert!(e.to_string().contains("it is a file"), "{e}");
    }

    #[test]
    fn an_empty_directory_answers_empty_tables_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let t = rt.block_on(Tracking::open(dir.path())).unwrap();
        let b = rt
            .block_on(t.query("SELECT count(*) AS n FROM events, dead_letters"))
            .unwrap();
        assert_eq!(format(&b, Format::Csv).unwrap(), "n\n0\n");
        // A result without rows keeps its columns.
        let b = rt
            .block_on(t.query("SELECT message_id, state FROM events WHERE state = 'x'"))
            .unwrap();
        assert_eq!(format(&b, Format::Csv).unwrap(), "message_id,state\n");
        assert!(
            format(&b, Format::Table)
                .unwrap()
                .contains("| message_id | state |")
        );
        assert_eq!(
            json_table(&b, 10).unwrap()["columns"],
            serde_json::json!(["message_id", "state"])
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A session lists the files at every query: a file written after the first query is
    /// read by the next (here a torn one, which the next query names).
    #[test]
    fn every_query_lists_the_files_anew() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("dead_letters/date=2025-11-22");
        std::fs::create_dir_all(&part).unwrap();
        let rt = rt();
        let t = rt.block_on(Tracking::open(dir.path())).unwrap();
        let b = rt
            .block_on(t.query("SELECT count(*) AS n FROM dead_letters"))
            .unwrap();
        assert_eq!(format(&b, Format::Csv).unwrap(), "n\n0\n");
        let later = part.join("later.parquet");
        std::fs::write(&later, b"PAR1 but not really").unwrap();
        assert_names(&rt, &t, &later);
    }

    /// A query of `dead_letters` fails naming `file` (and no other).
    fn assert_names(rt: &tokio::runtime::Runtime, t: &Tracking, file: &Path) {
        let e = rt
            .block_on(t.query("SELECT count(*) FROM dead_letters"))
            .unwrap_err();
        assert!(
            matches!(&e, SqlError::Corrupt { files, .. } if files == &[file.display().to_string()]),
            "{e}"
        );
    }

    /// A `#` in the directory's path is part of the path: the tables read its files (here a
    /// torn one, named), not those of the path cut at the `#` (none: 0 rows, no error).
    #[test]
    fn a_hash_in_the_path_is_part_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let tracking = dir.path().join("job#2/tracking");
        let part = tracking.join("dead_letters/date=2025-11-22");
        std::fs::create_dir_all(&part).unwrap();
        let bad = part.join("torn.parquet");
        std::fs::write(&bad, b"PAR1 but not really").unwrap();
        let rt = rt();
        let t = rt.block_on(Tracking::open(&tracking)).unwrap();
        assert_names(&rt, &t, &bad);
    }

    #[test]
    fn a_corrupt_file_is_named_or_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("dead_letters/date=2025-11-22");
        std::fs::create_dir_all(&part).unwrap();
        let bad = part.join("torn.parquet");
        std::fs::write(&bad, b"PAR1 but not really").unwrap();
        let rt = rt();
        let t = rt.block_on(Tracking::open(dir.path())).unwrap();
        assert_names(&rt, &t, &bad);
        // A mistake in the statement is still about the statement, and so is its failure
        // as it runs.
        for sql in ["SELEC 1", "SELECT CAST('x' AS BIGINT)", "SELECT 1 / 0"] {
            let e = rt.block_on(t.query(sql)).unwrap_err();
            assert!(matches!(e, SqlError::Query(_)), "{sql}: {e}");
        }
        let t = rt
            .block_on(Tracking::open_with(dir.path(), Corrupt::Skip))
            .unwrap();
        assert_eq!(t.skipped().len(), 1);
        assert_eq!(t.skipped()[0].0, bad);
        let b = rt
            .block_on(t.query("SELECT count(*) AS n FROM dead_letters"))
            .unwrap();
        assert_eq!(format(&b, Format::Csv).unwrap(), "n\n0\n");
        // A query's own failure is its own, not the skipped file's.
        let e = rt
            .block_on(t.query("SELECT CAST('x' AS BIGINT)"))
            .unwrap_err();
        assert!(matches!(e, SqlError::Query(_)), "{e}");
        // The same session reads a file written since, and still leaves the bad one out.
        dead_letter_file(&part.join("later.parquet"));
        let count = |t: &Tracking| {
            let b = rt
                .block_on(t.query("SELECT count(*) AS n FROM dead_letters"))
                .unwrap();
            format(&b, Format::Csv).unwrap()
        };
        assert_eq!(count(&t), "n\n1\n");
        // A bad file written since is named, and said to need the tables opened again.
        let worse = part.join("worse.parquet");
        std::fs::write(&worse, b"PAR1 torn too").unwrap();
        let e = rt
            .block_on(t.query("SELECT count(*) FROM dead_letters"))
            .unwrap_err();
        let said = e.to_string();
        assert!(
            said.contains("worse.parquet") && said.contains("open them again"),
            "{said}"
        );
        std::fs::remove_file(&worse).unwrap();
        // A compacted file left out replaces nothing: the rows of the files it lists are read.
        std::fs::write(part.join("compact-1-0.parquet"), b"PAR1 torn").unwrap();
        std::fs::write(
            part.join("compact-1-0.replaces.json"),
            br#"{"files": ["later.parquet"]}"#,
        )
        .unwrap();
        let t = rt
            .block_on(Tracking::open_with(dir.path(), Corrupt::Skip))
            .unwrap();
        assert_eq!(t.skipped().len(), 2);
        assert_eq!(count(&t), "n\n1\n");
    }

    /// A readable `dead_letters` file of one row.
    fn dead_letter_file(path: &Path) {
        use datafusion::arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};
        let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let time = TimestampMillisecondArray::from(vec![1_763_784_000_000]).with_timezone("UTC");
        let batch = RecordBatch::try_new(
            dead_letters_schema(),
            vec![
                Arc::new(time),
                text("file:r.jsonl:1"),
                text("{"),
                text("not JSON"),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut w =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}
