//! The service's one `/metrics`: the service's own families (jobs per state, restarts per job)
//! and every running job's `/metrics` (each series already carries its `job` label), merged so
//! that each family appears once with the samples of every job, in the OpenMetrics text format.

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::admin::metrics::escape;

/// The service's own metrics, from `GET /jobs`'s view of every job.
#[derive(Debug)]
struct Jobs(Vec<Value>);

impl Collector for Jobs {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let states = ["starting", "running", "restarting", "failed", "stopped"];
        let mut m = encoder.encode_descriptor(
            "tidings_serve_jobs",
            "Jobs of the service, by state.",
            None,
            MetricType::Gauge,
        )?;
        for state in states {
            let n = self.0.iter().filter(|j| j["state"] == state).count() as i64;
            let labels = [("state", Cow::Borrowed(state))];
            ConstGauge::new(n).encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "tidings_serve_restarts",
            "Restarts of a job after it ended on its own with a failure.",
            None,
            MetricType::Counter,
        )?;
        for j in &self.0 {
            let name = j["name"].as_str().unwrap_or_default();
            let labels = [("job", Cow::Owned(escape(name)))];
            let restarts = j["restarts"].as_u64().unwrap_or(0);
            ConstCounter::new(restarts).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The service's families for `jobs` (the views of `GET /jobs`), as OpenMetrics text.
pub fn own(jobs: Vec<Value>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Jobs(jobs)));
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// One family: its descriptor lines (`# HELP`, `# TYPE`, `# UNIT`) and its samples.
struct Family {
    name: String,
    head: Vec<String>,
    samples: Vec<String>,
}

/// Merges OpenMetrics texts: a family met in several texts is written once, with the samples
/// of all (in the order met); `# EOF` ends the whole.
pub fn merge<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    let mut families: Vec<Family> = Vec::new();
    for text in texts {
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if line == "# EOF" || line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let name = rest.split_whitespace().nth(1).unwrap_or_default();
                let i = match families.iter().position(|f| f.name == name) {
                    Some(i) => i,
                    None => {
                        families.push(Family {
                            name: name.to_string(),
                            head: Vec::new(),
                            samples: Vec::new(),
                        });
                        families.len() - 1
                    }
                };
                let f = &mut families[i];
                if !f.head.iter().any(|h| h == line) {
                    f.head.push(line.to_string());
                }
                current = Some(i);
            } else if let Some(i) = current {
                families[i].samples.push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for f in families {
        for l in f.head.iter().chain(&f.samples) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_several_jobs_are_written_once() {
        let a = "# HELP x X.\n# TYPE x counter\nx_total{job=\"a\"} 1\n# HELP up Up.\n# TYPE up gauge\nup{job=\"a\"} 1\n# EOF\n";
        let b = "# HELP x X.\n# TYPE x counter\nx_total{job=\"b\"} 2\n# EOF\n";
        let merged = merge([a, b]);
        assert_eq!(
            merged,
            "# HELP x X.\n# TYPE x counter\nx_total{job=\"a\"} 1\nx_total{job=\"b\"} 2\n# HELP up Up.\n# TYPE up gauge\nup{job=\"a\"} 1\n# EOF\n"
        );
        let own = own(vec![
            serde_json::json!({"name": "a", "state": "running", "restarts": 2}),
        ]);
        assert!(
            own.contains("tidings_serve_jobs{state=\"running\"} 1"),
            "{own}"
        );
        assert!(
            own.contains("tidings_serve_restarts_total{job=\"a\"} 2"),
            "{own}"
        );
    }
}
