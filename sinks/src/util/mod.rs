//! Machinery every sink shares.

pub mod http;
pub mod kit;
pub mod retry;
pub mod secrets;
pub mod server;
pub mod sign;
pub mod stats;
pub mod token;

/// Appends `bytes` to a file opened for appending, whole or not at all: a write cut short (a
/// full disk) is taken back, so no torn line is left for the next append (or a retry of the
/// same lines) to run into.
pub fn append_whole(file: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let before = file.metadata()?.len();
    file.write_all(bytes).inspect_err(|_| {
        let _ = file.set_len(before);
    })
}
