//! SQL over tidings' tracking tables, by DataFusion.
//!
//! [`Tracking::open`] registers the job's Parquet tables `events` and `dead_letters` (Hive
//! partitions `date=YYYY-MM-DD` become a `date` column) with their schemas from
//! [`tidings_model::schema`], so a job that has written nothing yet still answers with empty
//! tables. [`format`] renders results as a table, CSV or JSON lines.

pub mod reports;

use std::path::Path;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
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
}

impl Tracking {
    /// Registers `events` and `dead_letters` under `dir` (created if missing).
    pub async fn open(dir: &Path) -> Result<Tracking, SqlError> {
        for table in ["events", "dead_letters"] {
            let path = dir.join(table);
            std::fs::create_dir_all(&path).map_err(|source| SqlError::Io {
                path: path.display().to_string(),
                source,
            })?;
        }
        let dir = dir.canonicalize().map_err(|source| SqlError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Tracking::open_url(&format!("file://{}", dir.display())).await
    }

    /// Registers the tables under a tracking location given as an object-store URL
    /// (`file:///var/tidings/tracking`). Only `file://` stores are registered today; the
    /// tables are addressed by URL throughout, so another store (S3) needs only its
    /// registration on the session.
    pub async fn open_url(location: &str) -> Result<Tracking, SqlError> {
        if !location.starts_with("file://") {
            return Err(SqlError::Query(
                datafusion::error::DataFusionError::Configuration(format!(
                    "{location}: only local tracking directories (file://) are supported so far"
                )),
            ));
        }
        let ctx = SessionContext::new();
        for (table, schema) in [
            ("events", events_schema()),
            ("dead_letters", dead_letters_schema()),
        ] {
            let url = format!("{}/{table}/", location.trim_end_matches('/'));
            let options = ParquetReadOptions::default()
                .schema(&schema)
                .table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
            ctx.register_parquet(table, &url, options).await?;
        }
        Ok(Tracking { ctx })
    }

    /// Runs one statement and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
        Ok(self.ctx.sql(sql).await?.collect().await?)
    }

    /// Runs a report with its parameters.
    pub async fn report(
        &self,
        report: &reports::Report,
        params: &reports::Params,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        let sql = report.render(params).map_err(|e| {
            SqlError::Query(datafusion::error::DataFusionError::Plan(e.to_string()))
        })?;
        self.query(&sql).await
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

/// Renders batches in a format.
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
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
    }
}
