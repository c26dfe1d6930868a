//! An async front for [`IngestWriter`]: bytes arriving on the runtime (an
//! upload, a response passing through this node) are written and hashed on a
//! blocking thread, so the runtime never waits on the disk.

use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::blobs::{BlobDir, IngestWriter, Ingested};

/// Buffers in flight to the writer thread (a few hundred KiB at most).
const QUEUE: usize = 8;

/// A blob being written. Dropping it without [`BlobSink::finish`] removes
/// the temporary file.
#[derive(Debug)]
pub struct BlobSink {
    tx: Option<mpsc::Sender<Bytes>>,
    task: JoinHandle<io::Result<IngestWriter>>,
    size: u64,
}

impl BlobSink {
    /// Starts a new blob in `blobs`' temporary folder.
    pub fn begin(blobs: &BlobDir) -> io::Result<Self> {
        let mut w = blobs.begin()?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            while let Some(b) = rx.blocking_recv() {
                w.write(&b)?;
            }
            Ok(w)
        });
        Ok(Self {
            tx: Some(tx),
            task,
            size: 0,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Queues `data`; an error means the writer failed (see [`BlobSink::finish`]).
    pub async fn write(&mut self, data: Bytes) -> io::Result<()> {
        self.size += data.len() as u64;
        match &self.tx {
            Some(tx) => tx
                .send(data)
                .await
                .map_err(|_| io::Error::other("blob writer stopped")),
            None => Err(io::Error::other("blob writer stopped")),
        }
    }

    /// Flushes, fsyncs and returns the finished blob (hash, manifest).
    pub async fn finish(mut self) -> io::Result<Ingested> {
        self.tx.take();
        let w = (&mut self.task).await.map_err(io::Error::other)??;
        tokio::task::spawn_blocking(move || w.finish())
            .await
            .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_in_hash_out_and_a_dropped_sink_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(dir.path()).unwrap();
        let mut s = BlobSink::begin(&blobs).unwrap();
        s.write(Bytes::from_static(b"hello ")).await.unwrap();
        s.write(Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(s.size(), 11);
        let done = s.finish().await.unwrap();
        assert_eq!(done.hash, crate::catalog::ContentHash::of(b"hello world"));
        assert_eq!(done.size, 11);
        drop(done);
        let mut s = BlobSink::begin(&blobs).unwrap();
        s.write(Bytes::from_static(b"abandoned")).await.unwrap();
        drop(s);
        // the writer thread notices the closed channel and drops its file
        for _ in 0..100 {
            if std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count()
                == 0
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("temporary files left behind");
    }
}
