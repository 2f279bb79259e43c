//! `tidings state`: ask a running job's admin API about its live state.

use super::{AdminTarget, Failure, parse_vars};

#[derive(clap::Args)]
pub struct StateArgs {
    #[command(flatten)]
    target: AdminTarget,
    #[command(subcommand)]
    what: Option<StateWhat>,
}

#[derive(clap::Subcommand)]
enum StateWhat {
    /// Everything at once (the default).
    Summary,
    /// The content dedup window of (template, receiver, rendered content).
    Content {
        /// The template id.
        #[arg(long)]
        template: i64,
        /// The receiver.
        #[arg(long)]
        receiver: String,
        /// A placeholder value, `name=value` (repeatable), as in the request.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Judge a delivery at this event time (RFC 3339 or ms). Default: now.
        #[arg(long)]
        at: Option<String>,
    },
    /// The frequency counters of (receiver, channel).
    Frequency {
        /// The receiver.
        #[arg(long)]
        receiver: String,
        /// The channel (e.g. sms); or give --template.
        #[arg(
            long,
            required_unless_present = "template",
            conflicts_with = "template"
        )]
        channel: Option<String>,
        /// A template, for its channel.
        #[arg(long)]
        template: Option<i64>,
        /// Judge a delivery at this event time (RFC 3339 or ms). Default: now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Keys, entries, bytes and the oldest entry of each keyed operator.
    Operators,
    /// Parked night_delay deliveries.
    Park,
    /// Rate limiters and sends per account.
    Accounts,
    /// Kafka positions, lag, last checkpoint.
    Source,
}

pub fn run(args: StateArgs) -> Result<(), Failure> {
    let (addr, token) = args.target.resolve()?;
    let (path, query) = path_of(&args.what.unwrap_or(StateWhat::Summary))?;
    let pairs: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let shown = format!("http://{addr}{path}");
    match tidings_dataflows::admin::client::get_query(&addr, path, &pairs, token.as_deref()) {
        Ok((200, body)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            println!("{pretty}");
            Ok(())
        }
        Ok((status, body)) => Err(Failure::Failed(format!("{shown}: {status} {body}"))),
        Err(e) => Err(Failure::Failed(format!(
            "{shown}: {e} (is the job running?)"
        ))),
    }
}

/// The admin API's path and query pairs (encoded by the client) for what is asked.
fn path_of(what: &StateWhat) -> Result<(&'static str, Vec<(String, String)>), Failure> {
    let at = |q: &mut Vec<(String, String)>, at: &Option<String>| {
        if let Some(a) = at {
            q.push(("at".into(), a.clone()));
        }
    };
    Ok(match what {
        StateWhat::Summary => ("/state", vec![]),
        StateWhat::Content {
            template,
            receiver,
            vars,
            at: t,
        } => {
            let mut q = vec![
                ("template".into(), template.to_string()),
                ("receiver".into(), receiver.clone()),
            ];
            for (k, val) in parse_vars(vars)? {
                q.push((format!("var.{k}"), val.to_string()));
            }
            at(&mut q, t);
            ("/state/content", q)
        }
        StateWhat::Frequency {
            receiver,
            channel,
            template,
            at: t,
        } => {
            let mut q = vec![("receiver".into(), receiver.clone())];
            match (channel, template) {
                (Some(c), None) => q.push(("channel".into(), c.clone())),
                (None, Some(id)) => q.push(("template".into(), id.to_string())),
                _ => unreachable!("clap requires one of --channel and --template"),
            }
            at(&mut q, t);
            ("/state/frequency", q)
        }
        StateWhat::Operators => ("/state/operators", vec![]),
        StateWhat::Park => ("/state/park", vec![]),
        StateWhat::Accounts => ("/state/accounts", vec![]),
        StateWhat::Source => ("/state/source", vec![]),
    })
}
