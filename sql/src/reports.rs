//! Reports: named `.sql` files in `sql/queries/`, compiled into the binary and run by
//! `tidings report NAME`.
//!
//! A query names its parameters as placeholders — `{{date}}`, `{{template}}`, `{{receiver}}`,
//! `{{timezone}}` — that [`Report::render`] replaces with SQL literals, or with a typed NULL
//! when the user left them out (each query reads NULL as "all"). Its first comment line is
//! its description; a `-- params:` line lists the parameters it uses.

/// One report.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// The name `tidings report` takes.
    pub name: &'static str,
    /// The query with its placeholders.
    pub sql: &'static str,
}

macro_rules! report {
    ($name:literal) => {
        Report {
            name: $name,
            sql: include_str!(concat!("../queries/", $name, ".sql")),
        }
    };
}

/// Every report, in the order `--list` shows them.
pub const REPORTS: &[Report] = &[
    report!("template_funnel"),
    report!("receiver_timeline"),
    report!("channel_success"),
    report!("failure_reasons"),
    report!("dedup_shield"),
    report!("hourly_volume"),
];

/// Values for a report's placeholders.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// A local date, `YYYY-MM-DD`.
    pub date: Option<String>,
    /// A template id.
    pub template: Option<i64>,
    /// A receiver.
    pub receiver: Option<String>,
    /// The job's IANA time zone (`Asia/Shanghai` when not given).
    pub timezone: Option<String>,
}

/// A bad parameter or an unknown report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// No report of that name.
    #[error("no report `{0}`; `tidings report --list` shows them")]
    Unknown(String),
    /// A parameter that cannot be used.
    #[error("{0}")]
    Param(String),
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Report {
    /// The report called `name`.
    pub fn find(name: &str) -> Result<Report, ReportError> {
        REPORTS
            .iter()
            .find(|r| r.name == name)
            .copied()
            .ok_or_else(|| ReportError::Unknown(name.to_string()))
    }

    /// The first comment line.
    pub fn description(&self) -> &'static str {
        self.sql
            .lines()
            .find_map(|l| l.strip_prefix("--"))
            .map(str::trim)
            .unwrap_or("")
    }

    /// The parameters the query uses.
    pub fn params(&self) -> Vec<&'static str> {
        ["date", "template", "receiver", "timezone"]
            .into_iter()
            .filter(|p| self.sql.contains(&format!("{{{{{p}}}}}")))
            .collect()
    }

    /// The query with its placeholders replaced.
    pub fn render(&self, p: &Params) -> Result<String, ReportError> {
        // The tables' `date` is written YYYY-MM-DD; a date chrono reads otherwise ("2025-1-5",
        // " 2025-01-05") is compared in that form, or it would match no row.
        let date = p
            .date
            .as_deref()
            .map(|d| {
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map(|day| day.format("%Y-%m-%d").to_string())
                    .map_err(|_| ReportError::Param(format!("--date {d:?}: write YYYY-MM-DD")))
            })
            .transpose()?;
        let tz = p.timezone.as_deref().unwrap_or("Asia/Shanghai");
        if tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(ReportError::Param(format!("unknown time zone {tz:?}")));
        }
        Ok(self
            .sql
            .replace(
                "{{date}}",
                &date
                    .as_deref()
                    .map(quote)
                    .unwrap_or_else(|| "CAST(NULL AS VARCHAR)".into()),
            )
            .replace(
                "{{template}}",
                &p.template
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "CAST(NULL AS BIGINT)".into()),
            )
            .replace(
                "{{receiver}}",
                &p.receiver
                    .as_deref()
                    .map(quote)
                    .unwrap_or_else(|| "CAST(NULL AS VARCHAR)".into()),
            )
            .replace("{{timezone}}", &quote(tz)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_has_a_description_and_renders_without_placeholders() {
        for r in REPORTS {
            assert!(!r.description().is_empty(), "{}", r.name);
            let sql = r.render(&Params::default()).unwrap();
            assert!(!sql.contains("{{"), "{}: {sql}", r.name);
        }
    }

    #[test]
    fn literals_are_quoted_and_bad_params_refused() {
        let r = Report::find("receiver_timeline").unwrap();
        let sql = r
            .render(&Params {
                receiver: Some("o'brien".into()),
                ..Params::default()
            })
            .unwrap();
        assert!(sql.contains("'o''brien'"), "{sql}");
        assert!(matches!(
            r.render(&Params {
                date: Some("22/11/2025".into()),
                ..Params::default()
            }),
            Err(ReportError::Param(_))
        ));
        // A date chrono reads in a looser form is compared as the tables write it.
        let daily = REPORTS
            .iter()
            .find(|r| r.params().contains(&"date"))
            .unwrap();
        let sql = daily
            .render(&Params {
                date: Some(" 2025-1-5".into()),
                ..Params::default()
            })
            .unwrap();
        assert!(
            sql.contains("'2025-01-05'") && !sql.contains("2025-1-5"),
            "{sql}"
        );
        assert_eq!(
            Report::find("nope").unwrap_err(),
            ReportError::Unknown("nope".into())
        );
    }
}
