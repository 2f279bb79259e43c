//! The send API's metrics (`GET /metrics` of `tidings gateway`, merged into `serve`'s):
//! requests by route and answer code, and answer times by route, each labelled with the job.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    job: String,
    route: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Timed {
    job: String,
    route: String,
}

fn buckets() -> Histogram {
    // 0.5 ms to about 16 s: a slow broker's answers (10 s, and a wait behind changes) fall
    // in a bucket of their own, not only in +Inf.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The counters of one gateway.
#[derive(Debug)]
pub struct Metrics {
    job: String,
    registry: Registry,
    requests: Family<Answered, Counter>,
    seconds: Family<Timed, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// Metrics of job `job`'s send API.
    pub fn new(job: &str) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<Answered, Counter>::default();
        let seconds = Family::<Timed, Histogram, fn() -> Histogram>::new_with_constructor(
            buckets as fn() -> Histogram,
        );
        registry.register(
            "tidings_gateway_requests",
            "Send API requests, by route and answer code (00000 accepted).",
            requests.clone(),
        );
        registry.register(
            "tidings_gateway_request_seconds",
            "Send API answer times (accepted ones include the broker's acknowledgement).",
            seconds.clone(),
        );
        Metrics {
            // prometheus-client writes label values as given: a job name is any string.
            job: crate::admin::metrics::escape(job),
            registry,
            requests,
            seconds,
        }
    }

    /// Counts one answer.
    pub fn answered(&self, route: &str, code: &str, seconds: f64) {
        self.requests
            .get_or_create(&Answered {
                job: self.job.clone(),
                route: route.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.seconds
            .get_or_create(&Timed {
                job: self.job.clone(),
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// The OpenMetrics text.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job name with quotes and a backslash is escaped in every series, so one job's name
    /// never breaks the page (`serve` merges every job's into its own); a 10 s answer has a
    /// bucket below +Inf.
    #[test]
    fn a_job_name_is_escaped_and_slow_answers_have_a_bucket() {
        let m = Metrics::new("shop \"eu\"\\x");
        m.answered("send", "B0001", 10.0);
        let text = m.text();
        assert!(
            text.contains(r#"tidings_gateway_requests_total{job="shop \"eu\"\\x",route="send",code="B0001"} 1"#),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("tidings_gateway_request_seconds_bucket")
                    && l.ends_with(" 1")
                    && !l.contains("+Inf")
            })
            .unwrap_or_else(|| panic!("no finite bucket holds a 10 s answer: {text}"));
        assert!(line.contains(r#"le="16.384""#), "{line}");
    }
}
