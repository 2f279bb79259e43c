//! Local providers: `outbox` writes every rendered message to a JSON-lines file per channel and
//! sends nothing; `blackhole` accepts and forgets (benches). Both are real sinks: rate limits,
//! concurrency, retries and tracking apply to them exactly as to a network provider.
//!
//! An outbox line (docs/job-file.md):
//! `{"message_id", "template_id", "channel", "receiver", "content": {rendered content model}}`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tidings_model::Receiver;

use tidings_model::Channel;

use crate::SendBatch;
use crate::util::retry::SendError;

/// One outbox directory. A std `Mutex`, not a tokio one: nothing awaits while it is held, and a
/// batch is written with one `write_all` so lines of concurrent sends never interleave.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    files: Mutex<HashMap<Channel, File>>,
}

impl Outbox {
    /// An outbox writing under `dir` (created if missing).
    pub fn new(dir: &Path) -> io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        Ok(Outbox {
            dir: dir.to_path_buf(),
            files: Mutex::new(HashMap::new()),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of a channel.
    pub fn path(&self, channel: Channel) -> PathBuf {
        self.dir.join(format!("{}.jsonl", channel.name()))
    }

    /// Appends one line per receiver.
    pub fn send(&self, batch: &SendBatch, receivers: &[Receiver]) -> Result<(), SendError> {
        let mut buf = Vec::with_capacity(receivers.len() * (batch.meta.content.len() + 128));
        for r in receivers {
            write_line(&mut buf, batch, r);
        }
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let file = match files.get_mut(&batch.channel) {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path(batch.channel))
                    .map_err(|e| SendError::Transient(format!("outbox: {e}")))?;
                files.entry(batch.channel).or_insert(f)
            }
        };
        crate::util::append_whole(file, &buf)
            .map_err(|e| SendError::Transient(format!("outbox: {e}")))
    }
}

impl Outbox {
    /// Records a recall: one line `{"message_id", "recalled": true}` in
    /// `<channel>.recall.jsonl` (the outbox stands in for the provider's recall API).
    pub fn recall(&self, channel: Channel, message_id: &str) -> Result<(), SendError> {
        let path = self.dir.join(format!("{}.recall.jsonl", channel.name()));
        let line = format!(
            "{}\n",
            serde_json::json!({"message_id": message_id, "recalled": true})
        );
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| crate::util::append_whole(&mut f, line.as_bytes()))
            .map_err(|e| SendError::Transient(format!("outbox: {e}")))
    }
}

fn write_line(buf: &mut Vec<u8>, batch: &SendBatch, receiver: &str) {
    let json = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let m = &batch.meta;
    // The content is already compact JSON: embedded as is, not re-encoded.
    let _ = writeln!(
        buf,
        r#"{{"message_id":{},"template_id":{},"channel":"{}","receiver":{},"content":{}}}"#,
        json(&m.message_id),
        m.template_id,
        batch.channel.name(),
        json(receiver),
        m.content
    );
}

/// Outboxes shared by directory: two accounts writing to one directory share its files.
#[derive(Debug, Default)]
pub struct Outboxes {
    by_dir: Mutex<HashMap<PathBuf, Arc<Outbox>>>,
}

impl Outboxes {
    /// The outbox of `dir`, by the directory itself: `var/outbox` and `./var/outbox` are one
    /// outbox (two would append to one file under two locks, and a write taken back after a
    /// short write could cut the other's line).
    pub fn get(&self, dir: &Path) -> io::Result<Arc<Outbox>> {
        std::fs::create_dir_all(dir)?;
        let key = dir.canonicalize()?;
        let mut map = self.by_dir.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = map.get(&key) {
            return Ok(o.clone());
        }
        let o = Arc::new(Outbox::new(dir)?);
        map.insert(key, o.clone());
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_model::MessageMeta;

    /// One directory written two ways is one outbox.
    #[test]
    fn a_directory_is_one_outbox_however_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = Outboxes::default();
        let a = boxes.get(&dir.path().join("out")).unwrap();
        let b = boxes.get(&dir.path().join("x/../out/.")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = boxes.get(&dir.path().join("other")).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn writes_contract_lines() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::new(dir.path()).unwrap();
        let meta = Arc::new(MessageMeta {
            live: None,
            accounts: None,
            message_id: "m1".into(),
            template_id: 7,
            business_id: 1,
            biz_id: None,
            content: r#"{"content":"hi \"x\""}"#.into(),
            event_time: 0,
            seq: 0,
        });
        let batch = SendBatch {
            meta,
            channel: Channel::Sms,
            msg_type: tidings_model::MsgType::Notice,
            event_time: 0,
            receivers: vec![].into(),
        };
        o.send(&batch, &["a".into(), "b".into()]).unwrap();
        let text = std::fs::read_to_string(dir.path().join("sms.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            serde_json::json!({"message_id": "m1", "template_id": 7, "channel": "sms", "receiver": "b", "content": {"content": "hi \"x\""}})
        );
    }
}
