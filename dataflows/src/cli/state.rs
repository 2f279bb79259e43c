//! `tidings state`: ask a running job's admin API about its live state.

use tidings_dataflows::admin::percent_encode as enc;

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
        #[arg(long, required_unless_present = "template")]
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
    let path = path_of(&args.what.unwrap_or(StateWhat::Summary))?;
    match tidings_dataflows::admin::get(&addr, &path, token.as_deref()) {
        Ok((200, body)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            println!("{pretty}");
            Ok(())
        }
        Ok((status, body)) => Err(Failure::Failed(format!(
            "http://{addr}{path}: {status} {body}"
        ))),
        Err(e) => Err(Failure::Failed(format!(
            "http://{addr}{path}: {e} (is the job running?)"
        ))),
    }
}

/// The admin API's path and query for what is asked.
fn path_of(what: &StateWhat) -> Result<String, Failure> {
    let at = |at: &Option<String>| {
        at.as_deref()
            .map(|a| format!("&at={}", enc(a)))
            .unwrap_or_default()
    };
    Ok(match what {
        StateWhat::Summary => "/state".to_string(),
        StateWhat::Content {
            template,
            receiver,
            vars,
            at: t,
        } => {
            let mut p = format!(
                "/state/content?template={template}&receiver={}",
                enc(receiver)
            );
            for (k, val) in parse_vars(vars)? {
                p.push_str(&format!("&var.{}={}", enc(k), enc(val)));
            }
            p + &at(t)
        }
        StateWhat::Frequency {
            receiver,
            channel,
            template,
            at: t,
        } => {
            let by = match (channel, template) {
                (Some(c), _) => format!("channel={}", enc(c)),
                (None, Some(id)) => format!("template={id}"),
                (None, None) => unreachable!("clap requires --channel or --template"),
            };
            format!("/state/frequency?receiver={}&{by}{}", enc(receiver), at(t))
        }
        StateWhat::Operators => "/state/operators".into(),
        StateWhat::Park => "/state/park".into(),
        StateWhat::Accounts => "/state/accounts".into(),
        StateWhat::Source => "/state/source".into(),
    })
}
