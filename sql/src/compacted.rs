//! An object store that reads tracking tables as the compactor publishes them
//! (`tidings_model::compaction`): each listing leaves out the files that a compacted file *in
//! the same listing* replaces, so every query (each lists anew) sees the small files or the
//! compacted one, never both, and never neither (a replaced file is deleted only after the
//! grace period). It also leaves out the files a reader was told to (unreadable ones,
//! `--skip-corrupt`). Everything else is the wrapped store's.
//!
//! A listing reads the lists it has not read before, [`FETCHES`] at a time (an object store
//! answers each in a round trip: a month of a day's 144 lists read one after the other is
//! minutes on S3), and keeps them for the next listings of the same session.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tidings_model::compaction::{PREFIX, REPLACES_SUFFIX, Replaces};

/// Lists of replaced files read at once by a listing.
pub const FETCHES: usize = 32;

/// A store whose listings hide replaced tracking files.
#[derive(Debug)]
pub struct Compacted<S: ?Sized> {
    inner: Arc<S>,
    reading: Reading,
}

/// How listings are read: each listing (and the stream `list` gives, which outlives the call)
/// shares it.
#[derive(Debug, Clone)]
struct Reading {
    lists: Arc<Lists>,
    /// Lists read at once.
    fetches: usize,
    left_out: Arc<BTreeSet<Path>>,
}

/// The lists read, by location, with the size and time they had then (a list is written once,
/// beside its compacted file under a name never used again; one written again under its name
/// with another size or time is read again). A list a listing should have and has not (deleted
/// by retention, or compacted again) is forgotten: a long-lived shell keeps no more than the
/// store holds.
type Lists = Mutex<HashMap<Path, (u64, i64, Arc<Replaces>)>>;

/// What a listing covers: every object under a prefix (`list`), or those directly in it
/// (`list_with_delimiter`).
#[derive(Debug, Clone)]
enum Listed {
    Under(Option<Path>),
    In(Option<Path>),
}

impl Listed {
    fn covers(&self, p: &Path) -> bool {
        match self {
            Listed::Under(prefix) => prefix.as_ref().is_none_or(|d| p.prefix_matches(d)),
            Listed::In(prefix) => &folder(p) == prefix.as_ref().unwrap_or(&Path::default()),
        }
    }
}

/// The folder `p` is in.
fn folder(p: &Path) -> Path {
    p.parts()
        .take(p.parts().count().saturating_sub(1))
        .collect()
}

impl<S> Compacted<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Compacted<S> {
        Compacted::from_arc(Arc::new(inner))
    }
}

impl<S: ?Sized> Compacted<S> {
    /// Wraps a shared `inner`.
    pub fn from_arc(inner: Arc<S>) -> Compacted<S> {
        let reading = Reading {
            lists: Arc::default(),
            fetches: FETCHES,
            left_out: Arc::default(),
        };
        Compacted { inner, reading }
    }

    /// Leaves `files` out of every listing too.
    pub fn leaving_out(mut self, files: BTreeSet<Path>) -> Compacted<S> {
        self.reading.left_out = Arc::new(files);
        self
    }

    /// Reads at most `n` lists at once (1: one after the other, as before [`FETCHES`]; the
    /// benchmark's baseline).
    pub fn with_fetches(mut self, n: usize) -> Compacted<S> {
        self.reading.fetches = n.max(1);
        self
    }
}

impl<S: fmt::Display + ?Sized> fmt::Display for Compacted<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Compacted({})", self.inner)
    }
}

impl Reading {
    /// The names a compacted file of this listing replaces (its list read from `store`, or kept
    /// in `lists` from an earlier listing). Lists beside no compacted file of the listing count for
    /// nothing.
    async fn replaced<S: ObjectStore + ?Sized>(
        &self,
        store: &S,
        listing: &[ObjectMeta],
        listed: &Listed,
    ) -> Result<BTreeSet<Path>> {
        let present: BTreeSet<&Path> = listing.iter().map(|m| &m.location).collect();
        self.lists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|at, _| !listed.covers(at) || present.contains(at));
        let wanted: Vec<(ObjectMeta, Path)> = listing
            .iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?;
                let stem = name.strip_suffix(REPLACES_SUFFIX)?;
                if !name.starts_with(PREFIX) {
                    return None;
                }
                let dir = folder(&meta.location);
                present
                    .contains(&dir.clone().join(format!("{stem}.parquet")))
                    .then(|| (meta.clone(), dir))
            })
            .collect();
        let read: Vec<(Path, Arc<Replaces>)> = futures::stream::iter(wanted)
            .map(|(meta, dir)| async move { self.list_of(store, &meta).await.map(|l| (dir, l)) })
            .buffer_unordered(self.fetches)
            .try_collect()
            .await?;
        Ok(read
            .into_iter()
            .flat_map(|(dir, list)| {
                list.files
                    .iter()
                    .map(|f| dir.clone().join(f.as_str()))
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// The list at `meta`: as kept when it was read before at this size and time, else read now.
    async fn list_of<S: ObjectStore + ?Sized>(
        &self,
        store: &S,
        meta: &ObjectMeta,
    ) -> Result<Arc<Replaces>> {
        let seen = (
            meta.size,
            meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
        );
        let lock = || self.lists.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((size, time, list)) = lock().get(&meta.location)
            && (*size, *time) == seen
        {
            return Ok(list.clone());
        }
        let body = store
            .get_opts(&meta.location, GetOptions::default())
            .await?
            .bytes()
            .await?;
        let list: Arc<Replaces> =
            Arc::new(
                serde_json::from_slice(&body).map_err(|e| object_store::Error::Generic {
                    store: "tidings compaction",
                    source: Box::new(e),
                })?,
            );
        lock().insert(meta.location.clone(), (seen.0, seen.1, list.clone()));
        Ok(list)
    }

    /// The listing as readers see it: without the files left out, then without those a compacted
    /// file still in it replaces (a compacted file left out replaces nothing: the files it
    /// replaced are read).
    async fn visible<S: ObjectStore + ?Sized>(
        &self,
        store: &S,
        listing: Vec<ObjectMeta>,
        listed: Listed,
    ) -> Result<Vec<ObjectMeta>> {
        let listing: Vec<ObjectMeta> = listing
            .into_iter()
            .filter(|m| !self.left_out.contains(&m.location))
            .collect();
        let gone = self.replaced(store, &listing, &listed).await?;
        Ok(listing
            .into_iter()
            .filter(|m| !gone.contains(&m.location))
            .collect())
    }
}

#[async_trait]
impl<S: ObjectStore + ?Sized> ObjectStore for Compacted<S> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let reading = self.reading.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let listing: Vec<ObjectMeta> = inner
                .list(prefix.as_ref())
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()?;
            reading
                .visible(inner.as_ref(), listing, Listed::Under(prefix))
                .await
        })
        .flat_map(|r| match r {
            Ok(v) => futures::stream::iter(v.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::iter([Err(e)]).boxed(),
        })
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        let objects = std::mem::take(&mut listed.objects);
        listed.objects = self
            .reading
            .visible(self.inner.as_ref(), objects, Listed::In(prefix.cloned()))
            .await?;
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store counting its reads, and how many of them were under way at once.
    #[derive(Debug, Default)]
    struct Counting {
        inner: InMemory,
        gets: AtomicUsize,
        under_way: AtomicUsize,
        most: AtomicUsize,
    }

    impl fmt::Display for Counting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let now = self.under_way.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            // A round trip: the listing may start its other reads meanwhile.
            tokio::task::yield_now().await;
            let got = self.inner.get_opts(location, options).await;
            self.under_way.fetch_sub(1, Ordering::SeqCst);
            got
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// A small file `part-<i>` and the compacted file `compact-<i>` that replaces it.
    async fn compacted_pair(store: &Counting, day: &Path, i: usize) {
        let put = |name: String, body: Vec<u8>| async move {
            store
                .put(&day.clone().join(name), PutPayload::from(body))
                .await
                .unwrap();
        };
        put(format!("part-{i}.parquet"), b"x".to_vec()).await;
        put(format!("{PREFIX}{i}.parquet"), b"x".to_vec()).await;
        let list = Replaces {
            files: vec![format!("part-{i}.parquet")],
        };
        put(
            format!("{PREFIX}{i}{REPLACES_SUFFIX}"),
            serde_json::to_vec(&list).unwrap(),
        )
        .await;
    }

    async fn names(store: &Compacted<Counting>, day: &Path) -> BTreeSet<String> {
        store
            .list(Some(day))
            .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
            .try_collect()
            .await
            .unwrap()
    }

    /// A listing reads the lists it has not read yet, many at once; the next listing of the same
    /// store reads only a new one, and hides what each replaces all the same.
    #[tokio::test]
    async fn lists_are_read_at_once_and_once() {
        let inner = Arc::new(Counting::default());
        let day = Path::from("events/date=2025-11-22");
        for i in 0..40 {
            compacted_pair(&inner, &day, i).await;
        }
        let store = Compacted::from_arc(inner.clone());
        assert_eq!(store.reading.fetches, FETCHES);
        let first = names(&store, &day).await;
        assert_eq!(first.len(), 80, "{first:?}");
        assert!(!first.iter().any(|n| n.starts_with("part-")), "{first:?}");
        assert_eq!(inner.gets.load(Ordering::SeqCst), 40);
        let most = inner.most.load(Ordering::SeqCst);
        assert!(
            most > 1,
            "the lists were read one after the other ({most} at once)"
        );

        assert_eq!(names(&store, &day).await, first);
        assert_eq!(
            inner.gets.load(Ordering::SeqCst),
            40,
            "a list was read again"
        );

        compacted_pair(&inner, &day, 40).await;
        let third = names(&store, &day).await;
        assert_eq!(third.len(), 82);
        assert!(!third.contains("part-40.parquet"), "{third:?}");
        assert_eq!(inner.gets.load(Ordering::SeqCst), 41);

        // A list deleted (retention) is forgotten by the next listing that covers it, and only
        // by one that does: another day's listing, or one of the folder above, keeps it.
        let kept = || store.reading.lists.lock().unwrap().len();
        assert_eq!(kept(), 41);
        let other = Path::from("events/date=2025-11-23");
        compacted_pair(&inner, &other, 0).await;
        names(&store, &other).await;
        assert_eq!(kept(), 42);
        inner
            .delete(&day.clone().join(format!("{PREFIX}0{REPLACES_SUFFIX}")))
            .await
            .unwrap();
        store
            .list_with_delimiter(Some(&Path::from("events")))
            .await
            .unwrap();
        assert_eq!(
            kept(),
            42,
            "a listing of the folder above forgot a list below it"
        );
        names(&store, &other).await;
        assert_eq!(kept(), 42, "another day's listing forgot a list");
        assert!(names(&store, &day).await.contains("part-0.parquet"));
        assert_eq!(kept(), 41, "a deleted list is kept");
        store.list_with_delimiter(Some(&day)).await.unwrap();
        assert_eq!(kept(), 41);
    }
}
