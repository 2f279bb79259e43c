//! Fixtures of the operators' unit tests: one job's templates and gate, records, deliveries and
//! parks, and a single-worker dataflow to run an operator in.

use std::sync::Arc;

use chrono::NaiveTime;
use tidings_model::receiver::ReceiverValidator;
use tidings_model::time::{Millis, NightWindow};
use tidings_model::{Delivery, MessageMeta, Templates, ids};

use crate::event_time::EventTime;
use crate::gate::Gate;
use crate::park::Parked;
use crate::shield::NightShield;
use crate::validate::Validator;
use crate::{Epoch, SourceRecord};

/// The job's time zone.
pub const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

/// 2025-11-22 00:00 in Shanghai.
pub const DAY: Millis = 1_763_740_800_000;

/// `hh:mm` on 2025-11-22 in Shanghai.
pub fn at(hh: i64, mm: i64) -> Millis {
    DAY + (hh * 60 + mm) * 60_000
}

/// Epochs of one minute.
pub const EVENT: EventTime = EventTime {
    epoch_ms: 60_000,
    max_out_of_order_ms: 0,
    max_future_ms: 86_400_000,
    backlog: crate::event_time::Backlog::NONE,
};

/// The epoch of `t`.
pub fn epoch(t: Millis) -> Epoch {
    EVENT.epoch_of(t)
}

/// Template 1: sms codes; 2: email news, `night_delay`; 3: WeCom tasks (recallable).
pub fn templates() -> Arc<Templates> {
    Arc::new(
        Templates::parse(
            "t.toml",
            r#"
[[template]]
id = 1
name = "code"
channel = "sms"
msg_type = "notice"
id_type = "phone"
account = "a"
[template.content]
content = "code {$code}"

[[template]]
id = 2
name = "news"
channel = "email"
msg_type = "marketing"
id_type = "email"
shield = "night_delay"
account = "a"
[template.content]
title = "news"
content = "news {$n}"

[[template]]
id = 3
name = "task"
channel = "enterprise_we_chat"
msg_type = "notice"
id_type = "enterprise_user_id"
account = "a"
[template.content]
sendType = "text"
content = "task"
"#,
        )
        .expect("test templates parse"),
    )
}

/// The validator of the job.
pub fn validator() -> Validator {
    Validator::new(templates(), TZ)
}

/// The gate of the job: nights 00:00–08:00, released at 09:00.
pub fn gate() -> Gate {
    Gate {
        templates: templates(),
        receivers: ReceiverValidator::new("CN").expect("CN is a region"),
        discard: Default::default(),
        whitelist: Default::default(),
        shield: NightShield {
            window: NightWindow::parse("00:00-08:00").expect("a night window"),
            release_at: NaiveTime::from_hms_opt(9, 0, 0).expect("09:00"),
            tz: TZ,
        },
    }
}

/// A file line at `offset`, judged at `event_time`.
pub fn record(offset: i64, event_time: Millis, line: &str) -> SourceRecord {
    SourceRecord {
        source: "file:t.jsonl".into(),
        partition: 0,
        offset,
        bytes: line.as_bytes().to_vec(),
        read_time: event_time,
        timestamp: None,
        event_time,
        late_by: 0,
        bad_time: None,
    }
}

/// Receiver `index` of message `seq` of template 1 at `event_time`, with `content`.
pub fn delivery(
    seq: u128,
    index: u32,
    receiver: &str,
    event_time: Millis,
    content: &str,
) -> Delivery {
    let meta = MessageMeta::sample(seq, event_time, content);
    let keys = (
        ids::content_key(1, receiver, content),
        ids::frequency_key(receiver, "sms"),
    );
    Delivery::new(meta, receiver.into(), index, event_time, keys)
}

/// Receiver `index` of message `seq` at `event_time`, parked until `release_at`.
pub fn parked(release_at: Millis, event_time: Millis, seq: u128, index: u32) -> Parked {
    Parked {
        release_at,
        delivery: delivery(seq, index, "13800138000", event_time, "{}"),
    }
}

/// Runs a single-worker dataflow built by `build` from one input, fed `epochs` in order (each
/// epoch's items sent at it, then the input advanced past it); returns when it has finished.
pub fn run<D, F>(epochs: Vec<(Epoch, Vec<D>)>, build: F)
where
    D: Clone + Send + Sync + 'static,
    F: for<'s> FnOnce(timely::dataflow::StreamVec<'s, Epoch, D>) + Send + Sync + 'static,
{
    use timely::dataflow::operators::vec::Input;
    timely::execute_directly(move |worker| {
        let mut input = worker.dataflow::<Epoch, _, _>(|scope| {
            let (input, stream) = scope.new_input::<D>();
            build(stream);
            input
        });
        for (epoch, items) in epochs {
            input.advance_to(epoch);
            for item in items {
                input.send(item);
            }
            input.advance_to(epoch + 1);
            worker.step();
        }
    });
}

/// A checkpoint mirror in a directory (the object store's stand-in for unit tests; the runs
/// over a real S3 server are `dataflows/tests/s3.rs`), which records what was put.
#[derive(Debug)]
pub struct DirMirror {
    dir: std::path::PathBuf,
    /// Every `put`, in order.
    pub puts: std::sync::Mutex<Vec<String>>,
}

impl DirMirror {
    pub fn new(dir: &std::path::Path) -> DirMirror {
        DirMirror {
            dir: dir.to_path_buf(),
            puts: Default::default(),
        }
    }

    /// [`DirMirror::assert_mirrors`] and [`assert_reported`] for each of `cuts` (written in
    /// that order, each carrying from the one before).
    pub fn assert_chain(
        &self,
        c: &crate::checkpoint::Checkpoints,
        cuts: impl IntoIterator<Item = Epoch>,
    ) {
        let mut before = None;
        for cut in cuts {
            self.assert_mirrors(&c.dir_of(cut), before.as_deref());
            assert_reported(c, cut);
            before = Some(c.dir_of(cut));
        }
    }

    /// Asserts that the mirror's copy of the local cut directory `local` holds the same
    /// files, byte for byte, and that every file `put` there was written at that cut: a file
    /// carried from the cut `before` (the same inode there) was copied on the mirror, not sent
    /// again.
    pub fn assert_mirrors(&self, local: &std::path::Path, before: Option<&std::path::Path>) {
        use std::os::unix::fs::MetadataExt;
        let name = local.file_name().unwrap().to_str().unwrap();
        let files = |d: &std::path::Path| -> Vec<(String, Vec<u8>)> {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| {
                    let p = e.unwrap().path();
                    let f = p.file_name().unwrap().to_str().unwrap().to_string();
                    (f, std::fs::read(&p).unwrap())
                })
                .collect();
            v.sort();
            v
        };
        assert!(
            files(local) == files(&self.dir.join(name)),
            "{name}: the mirror holds the cut's files as written"
        );
        let puts = self.puts.lock().unwrap();
        for f in puts
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("{name}/")))
        {
            let inode = |d: &std::path::Path| std::fs::metadata(d.join(f)).ok().map(|m| m.ino());
            assert!(
                before.is_none_or(|b| inode(b) != inode(local)),
                "{name}/{f}: carried from the cut before, yet sent to the mirror again"
            );
        }
    }
}

impl crate::checkpoint::Mirror for DirMirror {
    fn list(&self) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(&self.dir)? {
            let d = d?;
            // (A directory the pruning thread is removing.)
            let Ok(files) = std::fs::read_dir(d.path()) else {
                continue;
            };
            for f in files {
                out.push(format!(
                    "{}/{}",
                    d.file_name().to_string_lossy(),
                    f?.file_name().to_string_lossy()
                ));
            }
        }
        Ok(out)
    }
    fn put(&self, rel: &str, from: &std::path::Path) -> std::io::Result<()> {
        self.puts.lock().unwrap().push(rel.to_string());
        let to = self.dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(from, to).map(|_| ())
    }
    fn get(&self, rel: &str, to: &std::path::Path) -> std::io::Result<()> {
        std::fs::copy(self.dir.join(rel), to).map(|_| ())
    }
    fn delete(&self, rel: &str) -> std::io::Result<()> {
        let path = self.dir.join(rel);
        std::fs::remove_file(&path)?;
        let _ = std::fs::remove_dir(path.parent().unwrap());
        Ok(())
    }
    fn copy(&self, from: &str, to: &str) -> std::io::Result<()> {
        let to = self.dir.join(to);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(self.dir.join(from), to).map(|_| ())
    }
}

/// Asserts that the parts reported for cut `e` (what its manifest lists) are every file in its
/// directory, at their lengths (a test's one writer writes them all).
pub fn assert_reported(c: &crate::checkpoint::Checkpoints, e: Epoch) {
    let on_disk: std::collections::BTreeMap<String, u64> = std::fs::read_dir(c.dir_of(e))
        .unwrap()
        .map(|f| {
            let f = f.unwrap();
            (
                f.file_name().to_str().unwrap().to_string(),
                f.metadata().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        c.reported_parts(e),
        on_disk,
        "cut {e}: the parts its manifest lists"
    );
}
