//! An object store that reads tracking tables as the compactor publishes them
//! (`tidings_model::compaction`): each listing leaves out the files that a compacted file *in
//! the same listing* replaces, so every query (each lists anew) sees the small files or the
//! compacted one, never both, and never neither (a replaced file is deleted only after the
//! grace period). Everything else is the wrapped store's.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tidings_model::compaction::{PREFIX, REPLACES_SUFFIX, Replaces};

/// A store whose listings hide replaced tracking files.
#[derive(Debug)]
pub struct Compacted<S: ?Sized> {
    inner: Arc<S>,
}

impl<S> Compacted<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Compacted<S> {
        Compacted {
            inner: Arc::new(inner),
        }
    }
}

impl<S: ?Sized> Compacted<S> {
    /// Wraps a shared `inner`.
    pub fn from_arc(inner: Arc<S>) -> Compacted<S> {
        Compacted { inner }
    }
}

impl<S: fmt::Display + ?Sized> fmt::Display for Compacted<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Compacted({})", self.inner)
    }
}

/// The names a compacted file of this listing replaces (its list read from `store`). Lists
/// beside no compacted file of the listing count for nothing.
async fn replaced<S: ObjectStore + ?Sized>(
    store: &S,
    listing: &[ObjectMeta],
) -> Result<BTreeSet<Path>> {
    let present: BTreeSet<&Path> = listing.iter().map(|m| &m.location).collect();
    let mut out = BTreeSet::new();
    for meta in listing {
        let Some(name) = meta.location.filename() else {
            continue;
        };
        let Some(stem) = name.strip_suffix(REPLACES_SUFFIX) else {
            continue;
        };
        if !name.starts_with(PREFIX) {
            continue;
        }
        let dir: Path = meta
            .location
            .parts()
            .take(meta.location.parts().count() - 1)
            .collect();
        if !present.contains(&dir.clone().join(format!("{stem}.parquet"))) {
            continue;
        }
        let body = store
            .get_opts(&meta.location, GetOptions::default())
            .await?
            .bytes()
            .await?;
        let list: Replaces =
            serde_json::from_slice(&body).map_err(|e| object_store::Error::Generic {
                store: "tidings compaction",
                source: Box::new(e),
            })?;
        out.extend(list.files.into_iter().map(|f| dir.clone().join(f)));
    }
    Ok(out)
}

fn keep(listing: Vec<ObjectMeta>, gone: &BTreeSet<Path>) -> Vec<ObjectMeta> {
    listing
        .into_iter()
        .filter(|m| !gone.contains(&m.location))
        .collect()
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
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let listing: Vec<ObjectMeta> = inner
                .list(prefix.as_ref())
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()?;
            let gone = replaced(inner.as_ref(), &listing).await?;
            Ok::<_, object_store::Error>(keep(listing, &gone))
        })
        .flat_map(|r| match r {
            Ok(v) => futures::stream::iter(v.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::iter([Err(e)]).boxed(),
        })
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        let gone = replaced(self.inner.as_ref(), &listed.objects).await?;
        listed.objects = keep(listed.objects, &gone);
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
