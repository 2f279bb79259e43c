//! The job service's clients: `tidings submit [--upload]`, `tidings jobs`, `tidings job NAME`,
//! `tidings stop NAME`, `tidings restart NAME` and `tidings delete NAME` ([`tidings_dataflows::serve::client`]).

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};
use tidings_dataflows::serve::client::{DEFAULT_SERVER, job_path, request};

use super::{Failure, OutputFormat, print_json_rows};

/// Which service to ask.
#[derive(clap::Args)]
pub struct ServerTarget {
    /// The service's URL (or HOST:PORT).
    #[arg(long, default_value = DEFAULT_SERVER)]
    server: String,
    /// Bearer token (the service's --token).
    #[arg(long)]
    token: Option<String>,
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The job file (sent as its absolute path: it must be readable on the service's node).
    job: PathBuf,
    /// Send the job file and the files it names (its templates, a requests file) in the
    /// request instead of a path, for a service on another machine.
    #[arg(long)]
    upload: bool,
    #[command(flatten)]
    target: ServerTarget,
}

#[derive(clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    target: ServerTarget,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

#[derive(clap::Args)]
pub struct NameArgs {
    /// The job's name (its job file's `name`).
    name: String,
    #[command(flatten)]
    target: ServerTarget,
}

#[derive(clap::Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    what: TemplateCommand,
}

#[derive(clap::Subcommand)]
enum TemplateCommand {
    /// Create or replace templates from now on: a templates TOML file (every `[[template]]`
    /// in it) or one template as JSON.
    Put {
        /// The file.
        file: PathBuf,
        /// The job's name.
        #[arg(long)]
        job: String,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Disable a template from now on (its messages become dead letters).
    Disable {
        /// The template id.
        id: i64,
        /// The job's name.
        #[arg(long)]
        job: String,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Replace the discard list and/or the whitelist from now on; with neither, show them.
    Lists {
        /// Template ids to discard, comma-separated (empty: none).
        #[arg(long)]
        discard: Option<String>,
        /// Receivers to send to, comma-separated (empty: everyone).
        #[arg(long)]
        whitelist: Option<String>,
        /// The job's name.
        #[arg(long)]
        job: String,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Replace an account's settings from now on: a TOML file with its `[accounts.NAME]`
    /// table (or the table's keys alone, or JSON); secrets as "${ENV}" references only.
    Account {
        /// The account's name in the job.
        name: String,
        /// The file.
        file: PathBuf,
        /// The job's name.
        #[arg(long)]
        job: String,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// The job's accounts, with the version each has from the changes made through the service.
    Accounts {
        /// The job's name.
        #[arg(long)]
        job: String,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// The job's templates, with the version each has from the changes made through the service.
    List {
        /// The job's name.
        #[arg(long)]
        job: String,
        #[command(flatten)]
        target: ServerTarget,
    },
}

pub fn template(args: TemplateArgs) -> Result<(), Failure> {
    match args.what {
        TemplateCommand::Put { file, job, target } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            let list: Vec<Value> =
                if file.extension().is_some_and(|e| e == "toml") {
                    tidings_model::Templates::parse(&file.display().to_string(), &text)
                        .map_err(|e| Failure::Usage(e.to_string()))?
                        .iter()
                        .map(|t| serde_json::to_value(t.as_ref()).unwrap_or(Value::Null))
                        .collect()
                } else {
                    vec![serde_json::from_str(&text).map_err(|e| {
                        Failure::Usage(format!("{}: not JSON: {e}", file.display()))
                    })?]
                };
            let path = format!("{}/templates", job_path(&job));
            for t in &list {
                print_pretty(&ask(&target, Method::POST, &path, Some(t))?);
            }
        }
        TemplateCommand::Disable { id, job, target } => {
            let path = format!("{}/templates/{id}/disable", job_path(&job));
            print_pretty(&ask(&target, Method::POST, &path, None)?);
        }
        TemplateCommand::Lists {
            discard,
            whitelist,
            job,
            target,
        } => {
            let path = format!("{}/lists", job_path(&job));
            let split = |v: &str| -> Vec<String> {
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            let mut body = json!({});
            if let Some(d) = &discard {
                let ids: Result<Vec<i64>, _> = split(d).iter().map(|x| x.parse::<i64>()).collect();
                body["discard"] = json!(ids.map_err(|e| Failure::Usage(format!(
                    "--discard {d:?}: {e}; give template ids, e.g. 3,7"
                )))?);
            }
            if let Some(w) = &whitelist {
                body["whitelist"] = json!(split(w));
            }
            let answer = if discard.is_none() && whitelist.is_none() {
                ask(&target, Method::GET, &path, None)?
            } else {
                ask(&target, Method::POST, &path, Some(&body))?
            };
            print_pretty(&answer);
        }
        TemplateCommand::Account {
            name,
            file,
            job,
            target,
        } => {
            let table = account_table(&name, &file)?;
            let path = format!("{}/accounts/{name}", job_path(&job));
            print_pretty(&ask(&target, Method::POST, &path, Some(&table))?);
        }
        TemplateCommand::Accounts { job, target } => {
            let path = format!("{}/accounts", job_path(&job));
            print_pretty(&ask(&target, Method::GET, &path, None)?);
        }
        TemplateCommand::List { job, target } => {
            let path = format!("{}/templates", job_path(&job));
            print_pretty(&ask(&target, Method::GET, &path, None)?);
        }
    }
    Ok(())
}

/// An account's table from `file`: TOML (its `[accounts.NAME]` table, or the table's keys
/// alone) or JSON.
fn account_table(name: &str, file: &std::path::Path) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let value: Value = if file.extension().is_some_and(|e| e == "toml") {
        let t: toml::Value = toml::from_str(&text)
            .map_err(|e| Failure::Usage(format!("{}: not TOML: {e}", file.display())))?;
        serde_json::to_value(t).map_err(|e| Failure::Usage(e.to_string()))?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| Failure::Usage(format!("{}: not JSON: {e}", file.display())))?
    };
    Ok(match value.pointer(&format!("/accounts/{name}")) {
        Some(table) => table.clone(),
        None => value,
    })
}

/// Asks the service; the answer's JSON, or the failure it stands for.
fn ask(
    target: &ServerTarget,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, Failure> {
    let (status, text) = request(method, &target.server, path, body, target.token.as_deref())
        .map_err(|e| {
            Failure::Failed(format!(
                "cannot reach the job service at {}: {e}; start it with `tidings serve`",
                target.server
            ))
        })?;
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if (200..300).contains(&status) {
        return Ok(answer);
    }
    if let Some(problems) = answer["problems"].as_array() {
        return Err(Failure::Problems(
            problems
                .iter()
                .map(|p| p.as_str().unwrap_or_default().to_string())
                .collect(),
        ));
    }
    let message = answer["error"]
        .as_str()
        .or_else(|| answer["msg"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| answer.to_string());
    Err(Failure::Failed(format!("{status}: {message}")))
}

fn print_pretty(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

pub fn submit(args: SubmitArgs) -> Result<(), Failure> {
    let body = if args.upload {
        upload_body(&args.job)?
    } else {
        let path = std::path::absolute(&args.job)
            .map_err(|e| Failure::Usage(format!("{}: {e}", args.job.display())))?;
        json!({"path": path})
    };
    let answer = ask(&args.target, Method::POST, "/jobs", Some(&body))?;
    print_pretty(&answer);
    Ok(())
}

/// `{"job": TEXT, "files": {...}}`: the job file and the files it names by relative path (its
/// templates; a requests file that is a file).
fn upload_body(job: &std::path::Path) -> Result<Value, Failure> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))
    };
    let text = read(job)?;
    let parsed: toml::Table =
        toml::from_str(&text).map_err(|e| Failure::Usage(format!("{}: {e}", job.display())))?;
    let base = job.parent().unwrap_or(std::path::Path::new("."));
    let named = [
        parsed.get("templates").and_then(|v| v.as_str()),
        parsed
            .get("source")
            .and_then(|s| s.get("path"))
            .and_then(|v| v.as_str()),
    ];
    let mut files = serde_json::Map::new();
    for name in named.into_iter().flatten() {
        let path = base.join(name);
        if std::path::Path::new(name).is_relative() && path.is_file() {
            files.insert(name.to_string(), Value::String(read(&path)?));
        }
    }
    Ok(json!({"job": text, "files": files}))
}

pub fn restart(args: NameArgs) -> Result<(), Failure> {
    let path = format!("{}/restart", job_path(&args.name));
    print_pretty(&ask(&args.target, Method::POST, &path, None)?);
    Ok(())
}

pub fn delete(args: NameArgs) -> Result<(), Failure> {
    print_pretty(&ask(
        &args.target,
        Method::DELETE,
        &job_path(&args.name),
        None,
    )?);
    Ok(())
}

pub fn jobs(args: JobsArgs) -> Result<(), Failure> {
    let answer = ask(&args.target, Method::GET, "/jobs", None)?;
    let rows = answer.as_array().cloned().unwrap_or_default();
    print_json_rows(&rows, args.format);
    Ok(())
}

pub fn job(args: NameArgs) -> Result<(), Failure> {
    let answer = ask(&args.target, Method::GET, &job_path(&args.name), None)?;
    print_pretty(&answer);
    Ok(())
}

pub fn stop(args: NameArgs) -> Result<(), Failure> {
    let path = format!("{}/stop", job_path(&args.name));
    let answer = ask(&args.target, Method::POST, &path, None)?;
    print_pretty(&answer);
    Ok(())
}
