//! `tidings sql` without a query: an interactive shell over the tracking tables.
//!
//! Statements end with `;` and may span lines; `\tables`, `\schema TABLE`, `\format
//! table|csv|json`, `\help`, `\q`. History is kept in `$TIDINGS_HISTORY` (default
//! `~/.tidings_history`). With stdin not a terminal it reads statements the same way, so a
//! script can be piped in.

use std::path::PathBuf;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tidings_sql::{Format, Tracking};

const HELP: &str = "\
statements end with `;` and may span lines
  \\tables            the tables (events, dead_letters)
  \\schema TABLE      a table's columns
  \\format FORMAT     table | csv | json
  \\help              this text
  \\q                 quit (or Ctrl-D)";

fn history_path() -> Option<PathBuf> {
    std::env::var_os("TIDINGS_HISTORY")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".tidings_history")))
}

/// Runs the shell until `\q` or end of input; returns whether every statement succeeded.
pub fn run(rt: &tokio::runtime::Runtime, tracking: &Tracking, mut format: Format) -> bool {
    let mut editor = match DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return false;
        }
    };
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprintln!("tidings sql — statements end with `;`, \\help for commands, \\q to quit");
    let mut ok = true;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "tidings> "
        } else {
            "      -> "
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                ok = false;
                break;
            }
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            let mut words = trimmed.split_whitespace();
            // A script's mistake fails the run as a bad statement does.
            let done = match (words.next(), words.next()) {
                (Some("\\q" | "\\quit"), _) => break,
                (Some("\\help" | "\\?"), _) => {
                    println!("{HELP}");
                    Ok(())
                }
                (Some("\\tables" | "\\dt"), _) => {
                    for t in tracking.tables() {
                        println!("{t}");
                    }
                    Ok(())
                }
                (Some("\\schema" | "\\d"), Some(table)) => rt
                    .block_on(tracking.schema(table))
                    .map(|cols| {
                        let w = cols.iter().map(|c| c.0.len()).max().unwrap_or(0);
                        for (name, ty, nullable) in cols {
                            let null = if nullable { "" } else { "  not null" };
                            println!("{name:<w$}  {ty}{null}");
                        }
                    })
                    .map_err(|e| e.to_string()),
                (Some("\\format"), Some(f)) => {
                    let chosen = match f {
                        "table" => Ok(Format::Table),
                        "csv" => Ok(Format::Csv),
                        "json" => Ok(Format::Json),
                        other => Err(format!("unknown format {other}; use table, csv or json")),
                    };
                    chosen.map(|f| format = f)
                }
                (Some(c @ ("\\schema" | "\\d")), None) => {
                    Err(format!("{c} takes a table, e.g. `{c} events`"))
                }
                (Some("\\format"), None) => Err("\\format takes table, csv or json".into()),
                _ => Err(format!("unknown command {trimmed}; \\help lists them")),
            };
            if let Err(e) = done {
                eprintln!("error: {e}");
                ok = false;
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let statement = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(statement.trim());
        let sql = statement.trim().trim_end_matches(';');
        let result = rt.block_on(async {
            let batches = tracking.query(sql).await?;
            tidings_sql::format(&batches, format)
        });
        match result {
            Ok(text) => println!("{}", text.trim_end()),
            Err(e) => {
                eprintln!("error: {e}");
                ok = false;
            }
        }
    }
    if !buffer.trim().is_empty() {
        eprintln!("error: the last statement has no closing `;` and was not run");
        ok = false;
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    ok
}
