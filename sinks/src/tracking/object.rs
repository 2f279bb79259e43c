//! Tracking tables on object storage (`tracking.dir = "s3://bucket/prefix"`), through the
//! `object_store` crate, so processes on different machines write one set of tables.
//!
//! The store is configured as every S3 tool is, from the environment: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and for an S3-compatible server (MinIO, moto)
//! `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true`. Objects appear whole when their PUT
//! completes, so a file is written in one PUT (no `.tmp` and rename as on a local disk), and
//! compaction publishes the list before the compacted file as it does locally
//! (`tidings_model::compaction`).
//!
//! The writers are synchronous (they run on timely worker threads): their requests run on
//! one small runtime of the process, from a helper thread when the caller is already inside
//! a tokio runtime.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

/// Where the tracking tables live: a local directory or an object-store prefix.
#[derive(Clone)]
pub enum TrackingDir {
    /// A directory on this machine (or a mounted shared filesystem).
    Local(PathBuf),
    /// A prefix in an object store.
    Object(ObjectDir),
}

impl TrackingDir {
    /// `location` as written in a job file or on the command line: a URL with a scheme
    /// (`s3://bucket/prefix`) is an object store, anything else a path relative to `base`.
    pub fn parse(location: &str, base: &Path) -> Result<TrackingDir, String> {
        if location.contains("://") {
            ObjectDir::parse(location).map(TrackingDir::Object)
        } else {
            Ok(TrackingDir::Local(base.join(location)))
        }
    }

    /// The object-store prefix, if the tables are there.
    pub fn object(&self) -> Option<&ObjectDir> {
        match self {
            TrackingDir::Local(_) => None,
            TrackingDir::Object(o) => Some(o),
        }
    }

    /// The local directory, if the tables are local.
    pub fn local(&self) -> Option<&Path> {
        match self {
            TrackingDir::Local(p) => Some(p),
            TrackingDir::Object(_) => None,
        }
    }
}

impl From<&Path> for TrackingDir {
    fn from(p: &Path) -> TrackingDir {
        TrackingDir::Local(p.to_path_buf())
    }
}

impl From<PathBuf> for TrackingDir {
    fn from(p: PathBuf) -> TrackingDir {
        TrackingDir::Local(p)
    }
}

impl From<&PathBuf> for TrackingDir {
    fn from(p: &PathBuf) -> TrackingDir {
        TrackingDir::Local(p.clone())
    }
}

impl From<&TrackingDir> for TrackingDir {
    fn from(d: &TrackingDir) -> TrackingDir {
        d.clone()
    }
}

impl fmt::Display for TrackingDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackingDir::Local(p) => write!(f, "{}", p.display()),
            TrackingDir::Object(o) => write!(f, "{}", o.url),
        }
    }
}

impl fmt::Debug for TrackingDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrackingDir({self})")
    }
}

/// A prefix in an object store, and the store.
#[derive(Clone)]
pub struct ObjectDir {
    url: String,
    bucket_url: String,
    prefix: ObjectPath,
    store: Arc<dyn ObjectStore>,
}

impl fmt::Debug for ObjectDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectDir({})", self.url)
    }
}

impl ObjectDir {
    /// `s3://bucket[/prefix]`, configured from the environment. Only the URL is checked
    /// here; [`ObjectDir::probe`] reaches the store.
    pub fn parse(url: &str) -> Result<ObjectDir, String> {
        let trimmed = url.trim_end_matches('/');
        let Some(rest) = trimmed.strip_prefix("s3://") else {
            let scheme = trimmed.split("://").next().unwrap_or("");
            return Err(format!(
                "`{url}`: the {scheme}:// scheme is not supported; use a local directory or s3://BUCKET/PREFIX"
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`{url}`: no bucket; use s3://BUCKET/PREFIX"));
        }
        let prefix = ObjectPath::parse(prefix).map_err(|e| format!("`{url}`: {e}"))?;
        // A request gives up after 30 s and its retries after 30 s more: a worker writing
        // tracking waits at most about a minute, then its retry loop (and `tracking_give_up`)
        // takes over.
        let store = AmazonS3Builder::from_env()
            .with_url(format!("s3://{bucket}"))
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                "30 seconds",
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5 seconds",
            )
            .with_retry(object_store::RetryConfig {
                retry_timeout: std::time::Duration::from_secs(30),
                ..Default::default()
            })
            .build()
            .map_err(|e| format!("`{url}`: {e}"))?;
        Ok(ObjectDir {
            url: trimmed.to_string(),
            bucket_url: format!("s3://{bucket}"),
            prefix,
            store: Arc::new(store),
        })
    }

    /// The URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `s3://bucket`: what a reader registers the store under.
    pub fn bucket_url(&self) -> &str {
        &self.bucket_url
    }

    /// The store (of the whole bucket).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The object `rel` (`/`-separated) under the prefix.
    pub fn path(&self, rel: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// Writes `body` as object `rel` (whole, in one PUT).
    pub fn put(&self, rel: &str, body: Vec<u8>) -> io::Result<()> {
        self.put_bytes(rel, body.into())
    }

    /// [`ObjectDir::put`] of shared bytes.
    pub fn put_bytes(&self, rel: &str, body: bytes::Bytes) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.path(rel));
        block_on(async move { store.put(&path, body.into()).await.map(|_| ()) })
            .map_err(|e| self.error(rel, e))
    }

    /// Writes the file `from` as object `rel`: whole in one PUT up to [`PART_BYTES`], larger
    /// in a multipart upload of parts that large, read from the file one at a time.
    pub fn put_file(&self, rel: &str, from: &Path) -> io::Result<()> {
        self.put_file_in(rel, from, PART_BYTES)
    }

    /// [`ObjectDir::put_file`] in parts of `part` bytes (S3 takes at least 5 MiB but for the
    /// last).
    pub fn put_file_in(&self, rel: &str, from: &Path, part: u64) -> io::Result<()> {
        use std::io::Read;
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", from.display()));
        let mut file = std::fs::File::open(from).map_err(named)?;
        let size = file.metadata().map_err(named)?.len();
        if size <= part {
            let mut body = Vec::with_capacity(size as usize);
            file.read_to_end(&mut body).map_err(named)?;
            return self.put(rel, body);
        }
        let (store, path) = (self.store.clone(), self.path(rel));
        let shown = from.display().to_string();
        block_on(async move {
            let mut upload = store.put_multipart(&path).await?;
            let sent = async {
                loop {
                    let mut chunk = Vec::with_capacity(part as usize);
                    (&mut file)
                        .take(part)
                        .read_to_end(&mut chunk)
                        .map_err(|e| local(&shown, e))?;
                    if chunk.is_empty() {
                        break;
                    }
                    upload.put_part(chunk.into()).await?;
                }
                upload.complete().await.map(|_| ())
            }
            .await;
            if sent.is_err() {
                let _ = upload.abort().await;
            }
            sent
        })
        .map_err(|e| self.error(rel, e))
    }

    /// Reads object `rel` into the file `to` (created, made durable), in ranged GETs of at
    /// most [`PART_BYTES`]: never whole in memory.
    pub fn get_file(&self, rel: &str, to: &Path) -> io::Result<()> {
        self.get_file_in(rel, to, PART_BYTES)
    }

    /// [`ObjectDir::get_file`] in ranges of `part` bytes.
    pub fn get_file_in(&self, rel: &str, to: &Path, part: u64) -> io::Result<()> {
        use std::io::Write;
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", to.display()));
        let mut file = std::fs::File::create(to).map_err(named)?;
        let (store, path) = (self.store.clone(), self.path(rel));
        let shown = to.display().to_string();
        block_on(async move {
            let size = store.head(&path).await?.size;
            let mut at = 0;
            while at < size {
                let end = size.min(at + part);
                let bytes = store.get_range(&path, at..end).await?;
                file.write_all(&bytes).map_err(|e| local(&shown, e))?;
                at = end;
            }
            file.sync_data().map_err(|e| local(&shown, e))
        })
        .map_err(|e| {
            // Nothing half-fetched is left (a cleanup leaves `.fetch` files alone).
            let _ = std::fs::remove_file(to);
            self.error(rel, e)
        })
    }

    /// The store's clock: the time it stamps on a marker object written now. Ages of objects
    /// are measured against it, so this machine's clock does not matter.
    pub fn server_now(&self) -> io::Result<chrono::DateTime<chrono::Utc>> {
        let rel = ".tidings-clock";
        self.put(rel, Vec::new())?;
        let (store, path) = (self.store.clone(), self.path(rel));
        block_on(async move { store.head(&path).await })
            .map(|m| m.last_modified)
            .map_err(|e| self.error(rel, e))
    }

    /// Reads object `rel`.
    pub fn get(&self, rel: &str) -> io::Result<Vec<u8>> {
        let (store, path) = (self.store.clone(), self.path(rel));
        block_on(async move {
            let got = store.get(&path).await?;
            got.bytes().await.map(|b| b.to_vec())
        })
        .map_err(|e| self.error(rel, e))
    }

    /// Copies object `from` to `to` on the store's side (S3's CopyObject: the body is not sent
    /// again).
    pub fn copy(&self, from: &str, to: &str) -> io::Result<()> {
        let (store, src, dst) = (self.store.clone(), self.path(from), self.path(to));
        block_on(async move { store.copy(&src, &dst).await })
            .map_err(|e| self.error(&format!("{to} (a copy of {from})"), e))
    }

    /// Deletes object `rel` (a missing object is not an error).
    pub fn delete(&self, rel: &str) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.path(rel));
        match block_on(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(rel, e)),
        }
    }

    /// The objects under `rel` (recursively): path relative to the prefix, size, and age (by
    /// this machine's clock; [`ObjectDir::list_at`] measures by another).
    pub fn list(&self, rel: &str) -> io::Result<Vec<Listed>> {
        self.list_at(rel, chrono::Utc::now())
    }

    /// [`ObjectDir::list`] with ages measured from `now`.
    pub fn list_at(
        &self,
        rel: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> io::Result<Vec<Listed>> {
        use futures_util::StreamExt;
        let (store, path) = (self.store.clone(), self.path(rel));
        let prefix_parts = self.prefix.parts().count();
        let metas = block_on(async move {
            let mut out = Vec::new();
            let mut stream = store.list(Some(&path));
            while let Some(meta) = stream.next().await {
                out.push(meta?);
            }
            Ok::<_, object_store::Error>(out)
        })
        .map_err(|e| self.error(rel, e))?;
        Ok(metas
            .into_iter()
            .map(|m| Listed {
                rel: m
                    .location
                    .parts()
                    .skip(prefix_parts)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: m.size,
                age: (now - m.last_modified).to_std().unwrap_or_default(),
            })
            .collect())
    }

    /// Takes or renews the lease `rel` for `owner` until `ttl` from now by the store's clock:
    /// `true` when `owner` holds it now. A lease of another owner that has not run out is
    /// left alone (`false`). Taking is a conditional PUT (`If-None-Match: *` for a new lease,
    /// `If-Match` on the ETag read for an old one), so of several owners trying at once
    /// exactly one wins.
    pub fn lease(&self, rel: &str, owner: &str, ttl: std::time::Duration) -> io::Result<bool> {
        use object_store::{PutMode, PutOptions, UpdateVersion};
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Lease {
            owner: String,
            until_ms: i64,
        }
        let now = self.server_now()?.timestamp_millis();
        let body = serde_json::to_vec(&Lease {
            owner: owner.to_string(),
            until_ms: now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        })
        .map_err(io::Error::other)?;
        let put = |mode: PutMode| {
            let (store, path, body) = (self.store.clone(), self.path(rel), body.clone());
            block_on(async move {
                let opts = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                store.put_opts(&path, body.into(), opts).await.map(|_| ())
            })
        };
        let lost = |e: &object_store::Error| {
            matches!(
                e,
                object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
            )
        };
        match put(PutMode::Create) {
            Ok(()) => return Ok(true),
            Err(e) if lost(&e) => {}
            Err(e) => return Err(self.error(rel, e)),
        }
        let (store, path) = (self.store.clone(), self.path(rel));
        let (held, e_tag, version) = block_on(async move {
            let got = store.get(&path).await?;
            let (e_tag, version) = (got.meta.e_tag.clone(), got.meta.version.clone());
            Ok::<_, object_store::Error>((got.bytes().await?, e_tag, version))
        })
        .map_err(|e| self.error(rel, e))?;
        // An unreadable lease counts as run out.
        if let Ok(l) = serde_json::from_slice::<Lease>(&held)
            && l.owner != owner
            && l.until_ms > now
        {
            return Ok(false);
        }
        match put(PutMode::Update(UpdateVersion { e_tag, version })) {
            Ok(()) => Ok(true),
            // A PUT retried after a 5xx whose first try was applied is refused as if taken:
            // the lease then holds this very body (its stamp is this call's own).
            Err(e) if lost(&e) => Ok(self.get(rel)? == body),
            Err(e) => Err(self.error(rel, e)),
        }
    }

    /// Gives up the lease `rel` if `owner` holds it (the next compactor need not wait for it
    /// to run out).
    pub fn release(&self, rel: &str, owner: &str) -> io::Result<()> {
        let held = match self.get(rel) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mine = serde_json::from_slice::<serde_json::Value>(&held)
            .is_ok_and(|l| l["owner"].as_str() == Some(owner));
        if mine { self.delete(rel) } else { Ok(()) }
    }

    /// Checks that the store answers and takes writes: a probe object is written and deleted.
    pub fn probe(&self) -> io::Result<()> {
        let rel = format!(".tidings-probe-{}", std::process::id());
        self.put(&rel, b"probe".to_vec())?;
        self.delete(&rel)
    }

    fn error(&self, rel: &str, e: object_store::Error) -> io::Error {
        let kind = match e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{}/{rel}: {}", self.url, one_line(&e)))
    }
}

/// An object under an [`ObjectDir`].
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its path relative to the prefix (`events/date=2026-12-01/part-….parquet`).
    pub rel: String,
    /// Its size in bytes.
    pub size: u64,
    /// How long ago it was written.
    pub age: std::time::Duration,
}

/// The error and its causes on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    // Servers answer errors with XML bodies over several lines: one line, and short.
    let mut line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 400 {
        line = line.chars().take(400).collect::<String>() + "…";
    }
    line
}

/// The runtime every synchronous request runs on: one per process, never dropped (the
/// store's pooled connections live on it).
fn runtime() -> Result<&'static tokio::runtime::Runtime, object_store::Error> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tidings-object-store")
        .enable_all()
        .build()
        .map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        })?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// A larger object goes up and comes back in parts this large ([`ObjectDir::put_file`],
/// [`ObjectDir::get_file`]): each part is one request under the client's 30 s timeout, where
/// a checkpoint part of a gigabyte in one request never finished at 30 MB/s (and was held
/// whole in memory, twice on the way back).
pub const PART_BYTES: u64 = 16 << 20;

/// A local file's error in a store request's future.
fn local(file: &str, e: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "local file",
        source: format!("{file}: {e}").into(),
    }
}

/// Runs `fut` to completion from synchronous code, on [`runtime`]; from a helper thread when
/// this thread is already inside a runtime (which cannot block).
fn block_on<F, T>(fut: F) -> Result<T, object_store::Error>
where
    F: std::future::Future<Output = Result<T, object_store::Error>> + Send,
    T: Send,
{
    let run = move || runtime()?.block_on(fut);
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(run).join().unwrap_or_else(|_| {
                Err(object_store::Error::Generic {
                    store: "S3",
                    source: "the request thread panicked".into(),
                })
            })
        })
    } else {
        run()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_any_request() {
        let base = Path::new("/jobs/a");
        match TrackingDir::parse("var/tracking", base).unwrap() {
            TrackingDir::Local(p) => assert_eq!(p, Path::new("/jobs/a/var/tracking")),
            TrackingDir::Object(_) => panic!("a path is local"),
        }
        let o = ObjectDir::parse("s3://bucket/tidings/tracking/").unwrap();
        assert_eq!(o.url(), "s3://bucket/tidings/tracking");
        assert_eq!(o.bucket_url(), "s3://bucket");
        assert_eq!(
            o.path("events/date=2026-12-01/a.parquet").as_ref(),
            "tidings/tracking/events/date=2026-12-01/a.parquet"
        );
        let root = ObjectDir::parse("s3://bucket").unwrap();
        assert_eq!(root.path("events").as_ref(), "events");
        let e = ObjectDir::parse("gs://bucket/x").unwrap_err();
        assert!(e.contains("gs:// scheme is not supported"), "{e}");
        let e = ObjectDir::parse("s3:///x").unwrap_err();
        assert!(e.contains("no bucket"), "{e}");
    }
}
