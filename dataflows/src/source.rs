//! The file source: every worker reads the file and takes the lines `line % peers == index`.
//!
//! A line's epoch is `(line - 1) / epoch_lines`, whoever reads it, so epochs (and with them
//! every decision) are the same for any worker count. Each worker keeps at most `in_flight`
//! epochs between itself and the send stage's frontier (backpressure: a large file waits on
//! disk, not in memory). When `stop` is raised (Ctrl-C) the source ends early and the graph
//! drains what it has read: sends finish, rows are flushed, parks are saved.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tidings_operators::{Clock, Epoch, SourceRecord};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

/// Reads `path` as JSON lines.
pub fn file_source<'s>(
    scope: Scope<'s, Epoch>,
    path: PathBuf,
    name: Arc<str>,
    epoch_lines: usize,
    in_flight: u64,
    progress: ProbeHandle<Epoch>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> StreamVec<'s, Epoch, SourceRecord> {
    let peers = scope.peers() as u64;
    let index = scope.index() as u64;
    source::<_, CapacityContainerBuilder<Vec<SourceRecord>>, _, _>(
        scope,
        "FileSource",
        move |cap, info| {
            let activator = scope.activator_for(info.address);
            let mut cap = Some(cap);
            let mut reader = match File::open(&path) {
                Ok(f) => Some(BufReader::with_capacity(1 << 20, f)),
                Err(e) => panic!("file source {}: {e}", path.display()),
            };
            let mut line_no: u64 = 0;
            let mut epoch: Epoch = 0;
            let mut line = Vec::new();
            move |output| {
                let (Some(c), Some(r)) = (cap.as_mut(), reader.as_mut()) else {
                    return;
                };
                if stop.load(Ordering::Relaxed) {
                    // Ctrl-C / SIGTERM: read no more; what was read drains through the graph.
                    cap = None;
                    reader = None;
                    return;
                }
                if epoch >= in_flight && progress.less_than(&(epoch - in_flight)) {
                    activator.activate_after(Duration::from_millis(1));
                    return;
                }
                let read_time = clock.now_ms();
                let mut batch = Vec::new();
                let mut eof = false;
                for _ in 0..epoch_lines {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            panic!("file source {}: line {}: {e}", path.display(), line_no + 1)
                        }
                    }
                    line_no += 1;
                    if (line_no - 1) % peers != index {
                        continue;
                    }
                    let bytes = line.trim_ascii();
                    if bytes.is_empty() {
                        continue;
                    }
                    batch.push(SourceRecord {
                        source: name.clone(),
                        partition: 0,
                        offset: line_no as i64,
                        bytes: bytes.to_vec(),
                        read_time,
                        timestamp: None,
                    });
                }
                if !batch.is_empty() {
                    output.session(&*c).give_iterator(batch.into_iter());
                }
                if eof {
                    cap = None;
                    reader = None;
                } else {
                    epoch += 1;
                    c.downgrade(&epoch);
                    activator.activate();
                }
            }
        },
    )
}
