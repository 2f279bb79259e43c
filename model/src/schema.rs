//! The Arrow schemas of the Parquet tracking tables (docs/tables.md).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// `events`: one row per receiver per state.
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time", ts(), false),
        Field::new("event_time", ts(), false),
        Field::new("message_id", DataType::Utf8, false),
        Field::new("business_id", DataType::Int64, false),
        Field::new("template_id", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("msg_type", DataType::Utf8, false),
        Field::new("receiver", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("state_code", DataType::Int32, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("biz_id", DataType::Utf8, true),
        // Added after the first release: files written before it lack the column (read as null).
        Field::new("template_version", DataType::Int32, true),
    ]))
}

/// `dead_letters`: records and messages that could not be taken.
pub fn dead_letters_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time", ts(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ]))
}
