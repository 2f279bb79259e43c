//! Recall: what an account must remember to take a message back. DingTalk recalls a work
//! notice by the `task_id` its send answered, WeCom an app message by its `msgid`; both
//! within 24 hours. Each account keeps a [`RecallBook`] of message id → provider references
//! and the receivers of each (a message's receivers may go out in several calls), in `state_dir/recall/<account>.jsonl` (append-only, loaded at start,
//! entries older than 24 hours dropped), so a recall works across restarts too.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How long a sent message can be recalled (DingTalk and WeCom: 24 hours).
pub const RECALL_WINDOW_MS: i64 = 24 * 3_600_000;

/// One recallable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// tidings' message id.
    pub message_id: String,
    /// Its template.
    #[serde(default)]
    pub template_id: i64,
    /// Its businessId (tracking rows of the recall carry it too).
    #[serde(default)]
    pub business_id: i64,
    /// The provider's reference (`task_id`, `msgid`).
    #[serde(default)]
    pub reference: String,
    /// The receivers it reached.
    #[serde(default)]
    pub receivers: Vec<String>,
    /// When it was sent (wall clock, ms).
    #[serde(default)]
    pub time: i64,
    /// The event time its send was judged at ([`crate::SendBatch::event_time`]): a recall
    /// reaches it only from that event time on. (0 in a book written before it was kept.)
    #[serde(default)]
    pub event_time: i64,
    /// A line that only says the message was recalled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recalled: bool,
}

/// An account's recallable messages.
#[derive(Debug, Default)]
pub struct RecallBook {
    entries: Mutex<HashMap<String, Vec<Entry>>>,
    file: Mutex<Option<File>>,
}

impl RecallBook {
    /// Loads (and from now on appends to) `path`; entries sent before `now - 24 h` are dropped.
    pub fn open(path: &Path, now: i64) -> std::io::Result<RecallBook> {
        RecallBook::open_adopting(path, now, &[])
    }

    /// Loads `path` as [`RecallBook::open`] and takes in the books `adopt` (those a cluster's
    /// processes kept that the cluster no longer has: its calls stay recallable after it
    /// shrank). The merged book replaces `path` before the adopted files are removed; a crash
    /// between the two reads them again next time, and a line already held is not kept twice.
    pub fn open_adopting(path: &Path, now: i64, adopt: &[PathBuf]) -> std::io::Result<RecallBook> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut entries = HashMap::new();
        for file in std::iter::once(path).chain(adopt.iter().map(PathBuf::as_path)) {
            if let Ok(f) = File::open(file) {
                load(file, f, now, &mut entries)?;
            }
        }
        // Rewrite what is still live, so the file does not grow forever.
        let mut body = Vec::new();
        for e in entries.values().flatten() {
            let _ = serde_json::to_writer(&mut body, e);
            body.push(b'\n');
        }
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, &body)?;
        std::fs::rename(&tmp, path)?;
        for file in adopt {
            match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(RecallBook {
            entries: Mutex::new(entries),
            file: Mutex::new(Some(file)),
        })
    }

    fn append(&self, e: &Entry) {
        if let Some(f) = self.file.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let mut line = serde_json::to_vec(e).unwrap_or_default();
            line.push(b'\n');
            if let Err(err) = crate::util::append_whole(f, &line) {
                tracing::warn!("recall book: {err}");
            }
        }
    }

    /// Remembers one provider call of a sent message.
    pub fn record(&self, e: Entry) {
        self.append(&e);
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(e.message_id.clone())
            .or_default()
            .push(e);
    }

    /// The calls of a message that a recall of event time `up_to` can take back at `now`:
    /// sent within the provider's window, and judged at or before `up_to` (a call sent for a
    /// later event time, which may or may not have been made by the time the recall runs,
    /// is never taken back: the same recall reaches the same calls however fast the sends
    /// ran ahead).
    pub fn get(&self, message_id: &str, now: i64, up_to: i64) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(message_id)
            .into_iter()
            .flatten()
            .filter(|e| reachable(e, now, up_to))
            .cloned()
            .collect()
    }

    /// Every message of a template a recall of event time `up_to` can take back at `now`
    /// (as [`RecallBook::get`]), oldest first.
    pub fn of_template(&self, template_id: i64, now: i64, up_to: i64) -> Vec<Entry> {
        let mut v: Vec<Entry> = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .filter(|e| e.template_id == template_id && reachable(e, now, up_to))
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.time, &a.message_id).cmp(&(b.time, &b.message_id)));
        let mut seen = std::collections::HashSet::new();
        v.retain(|e| seen.insert(e.message_id.clone()));
        v
    }

    /// Forgets one recalled call of a message.
    pub fn forget(&self, message_id: &str, reference: &str) {
        let removed = remove(
            &mut self.entries.lock().unwrap_or_else(|p| p.into_inner()),
            message_id,
            reference,
        );
        if removed {
            self.append(&Entry {
                message_id: message_id.to_string(),
                template_id: 0,
                business_id: 0,
                reference: reference.to_string(),
                receivers: Vec::new(),
                time: 0,
                event_time: 0,
                recalled: true,
            });
        }
    }
}

/// Reads a book's lines into `entries`: a recalled line removes its call, a call sent before
/// `now - 24 h` or already held is left out.
fn load(
    path: &Path,
    f: File,
    now: i64,
    entries: &mut HashMap<String, Vec<Entry>>,
) -> std::io::Result<()> {
    for line in BufReader::new(f).split(b'\n') {
        // A torn last line (a crash mid-write) is skipped, and gone once the book is
        // rewritten.
        let line = line?;
        let Ok(e) = serde_json::from_slice::<Entry>(&line) else {
            if !line.trim_ascii().is_empty() {
                tracing::warn!(
                    "{}: a line that is not a whole record ({} bytes) is dropped",
                    path.display(),
                    line.len()
                );
            }
            continue;
        };
        if e.recalled {
            remove(entries, &e.message_id, &e.reference);
        } else if e.time >= now - RECALL_WINDOW_MS {
            let calls = entries.entry(e.message_id.clone()).or_default();
            if !calls.contains(&e) {
                calls.push(e);
            }
        }
    }
    Ok(())
}

/// Whether a recall of event time `up_to` at wall-clock `now` can take back `e`.
fn reachable(e: &Entry, now: i64, up_to: i64) -> bool {
    e.time >= now - RECALL_WINDOW_MS && e.event_time <= up_to
}

fn remove(entries: &mut HashMap<String, Vec<Entry>>, message_id: &str, reference: &str) -> bool {
    let Some(calls) = entries.get_mut(message_id) else {
        return false;
    };
    let before = calls.len();
    calls.retain(|e| e.reference != reference);
    let removed = calls.len() < before;
    if calls.is_empty() {
        entries.remove(message_id);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, time: i64) -> Entry {
        Entry {
            message_id: id.into(),
            template_id: 6,
            business_id: 1,
            reference: format!("ref-{id}"),
            receivers: vec!["u1".into()],
            time,
            event_time: 0,
            recalled: false,
        }
    }

    #[test]
    fn survives_a_restart_forgets_recalled_and_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recall/acc.jsonl");
        let now = 100 * RECALL_WINDOW_MS;
        let book = RecallBook::open(&path, now).unwrap();
        book.record(entry("old", now - RECALL_WINDOW_MS - 1));
        book.record(entry("a", now - 10));
        book.record(entry("b", now - 5));
        let mut b2 = entry("b", now - 4);
        b2.reference = "ref-b2".into();
        book.record(b2);
        book.forget("a", "ref-a");
        assert_eq!(book.get("old", now, 0), vec![], "older than 24 h");
        drop(book);
        let book = RecallBook::open(&path, now).unwrap();
        assert_eq!(book.get("a", now, 0), vec![], "recalled");
        let b: Vec<String> = book
            .get("b", now, 0)
            .into_iter()
            .map(|e| e.reference)
            .collect();
        assert_eq!(b, ["ref-b", "ref-b2"], "two calls of one message");
        assert_eq!(book.of_template(6, now, 0).len(), 1);
        let lines = std::fs::read_to_string(&path).unwrap();
        assert_eq!(lines.lines().count(), 2, "compacted at open: {lines}");
    }

    /// A recall reaches the sends judged at or before its own event time, however far the
    /// sends of later event times had run by the time it ran; and a book's event times
    /// survive a restart (a book written before them reads as 0: reachable).
    #[test]
    fn a_recall_reaches_only_sends_at_or_before_its_event_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recall/acc.jsonl");
        let now = 100 * RECALL_WINDOW_MS;
        let book = RecallBook::open(&path, now).unwrap();
        for (id, at) in [("before", 1_000), ("same", 2_000), ("after", 2_001)] {
            let mut e = entry(id, now - 1);
            e.event_time = at;
            book.record(e);
        }
        let ids = |b: &RecallBook, up_to| -> Vec<String> {
            let mut v: Vec<String> = b
                .of_template(6, now, up_to)
                .into_iter()
                .map(|e| e.message_id)
                .collect();
            v.sort();
            v
        };
        assert_eq!(ids(&book, 2_000), ["before", "same"]);
        assert_eq!(
            book.get("after", now, 2_000),
            vec![],
            "sent after the recall"
        );
        assert_eq!(book.get("after", now, 2_001).len(), 1);
        drop(book);
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).unwrap()
                + r#"{"message_id":"old-book","template_id":6,"reference":"r","time":"#
                + &(now - 1).to_string()
                + "}\n",
        )
        .unwrap();
        let book = RecallBook::open(&path, now).unwrap();
        assert_eq!(ids(&book, 2_000), ["before", "old-book", "same"]);
    }

    /// A book of a process the cluster no longer has is taken in whole (its recalls too) and
    /// its file removed; read again after a crash between the two, nothing is held twice.
    #[test]
    fn an_adopted_book_is_merged_once() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("recall/acc.jsonl");
        let other = dir.path().join("recall/p1/acc.jsonl");
        let now = 100 * RECALL_WINDOW_MS;
        let book = RecallBook::open(&own, now).unwrap();
        book.record(entry("a", now - 10));
        drop(book);
        let book = RecallBook::open(&other, now).unwrap();
        let (mut b1, mut b2) = (entry("b", now - 5), entry("b", now - 5));
        b1.receivers = vec!["u1".into()];
        b2.receivers = vec!["u2".into()];
        book.record(b1);
        book.record(b2);
        book.record(entry("c", now - 4));
        book.forget("c", "ref-c");
        drop(book);
        let kept = std::fs::read(&other).unwrap();
        let book = RecallBook::open_adopting(&own, now, std::slice::from_ref(&other)).unwrap();
        assert!(!other.exists(), "the adopted file is removed");
        let calls = |b: &RecallBook, id| b.get(id, now, 0).len();
        assert_eq!(
            (calls(&book, "a"), calls(&book, "b"), calls(&book, "c")),
            (1, 2, 0),
            "two calls of b (outbox calls share a reference), c recalled"
        );
        drop(book);
        // A crash after the merged book replaced ours, before the other was removed.
        std::fs::write(&other, kept).unwrap();
        let book = RecallBook::open_adopting(&own, now, std::slice::from_ref(&other)).unwrap();
        assert_eq!((calls(&book, "a"), calls(&book, "b")), (1, 2));
        assert_eq!(book.of_template(6, now, 0).len(), 2);
        let lines = std::fs::read_to_string(&own).unwrap();
        assert_eq!(lines.lines().count(), 3, "{lines}");
    }
}
