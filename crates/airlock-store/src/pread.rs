//! Positional reads of a blob file: from the page cache on the calling thread when the bytes
//! are there, on tokio's blocking pool only for what must come from the disk.
//!
//! A cache hit during a rollout reads the same few layers for every node, so their pages
//! are nearly always cached. Sending each 128 KiB read to the blocking pool anyway cost two
//! thread hand-offs per chunk, and with thousands of bodies open those hand-offs, not the
//! copies, set the gateway's pace (`bench/fleet`, 1,000 nodes, a 128 MiB image: per-node
//! p50 fell from 33 s to 5 s). `preadv2` with `RWF_NOWAIT` copies what the page cache holds
//! and answers `EAGAIN` instead of waiting for the disk; the blocking pool reads the rest.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rustix::io::{Errno, ReadWriteFlags};

/// Fills `buf` from `offset` as far as the file goes and hands it back with the count:
/// fewer than `buf.len()` only where the file ends.
pub(crate) async fn read_at<F>(
    file: Arc<F>,
    mut buf: Vec<u8>,
    offset: u64,
) -> io::Result<(Vec<u8>, usize)>
where
    F: AsRef<File> + Send + Sync + 'static,
{
    let cached = match from_page_cache((*file).as_ref(), &mut buf, offset)? {
        Cached::All(n) => return Ok((buf, n)),
        Cached::Part(n) => n,
    };
    tokio::task::spawn_blocking(move || {
        let n = blocking((*file).as_ref(), &mut buf, offset, cached)?;
        Ok((buf, n))
    })
    .await
    .map_err(io::Error::other)?
}

/// How much of a read the page cache answered.
#[derive(Debug, PartialEq)]
enum Cached {
    /// All of it: the buffer is full, or holds the file's last `n` bytes.
    All(usize),
    /// The first `n` bytes; the rest needs the disk (or the kernel cannot say).
    Part(usize),
}

/// Reads what the page cache holds without waiting for the disk.
fn from_page_cache(file: &File, buf: &mut [u8], offset: u64) -> io::Result<Cached> {
    let mut filled = 0;
    while filled < buf.len() {
        let mut slice = [IoSliceMut::new(&mut buf[filled..])];
        match rustix::io::preadv2(
            file,
            &mut slice,
            offset + filled as u64,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) => return Ok(Cached::All(filled)),
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            // Not cached, or a kernel or filesystem without RWF_NOWAIT: the pool reads it.
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                return Ok(Cached::Part(filled));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Cached::All(filled))
}

/// Reads into `buf[filled..]`, waiting for the disk; the count of `buf` filled in all.
fn blocking(file: &File, buf: &mut [u8], offset: u64, mut filled: usize) -> io::Result<usize> {
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::fs::FsFile;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<FsFile>) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        tmp.flush().unwrap();
        let file = Arc::new(FsFile(File::open(tmp.path()).unwrap()));
        (tmp, file)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    #[test]
    fn bytes_just_written_come_from_the_page_cache_whole() {
        let bytes = pattern(300_000);
        let (_tmp, file) = file_of(&bytes);
        let mut buf = vec![0; 100_000];
        assert_eq!(
            from_page_cache(&file.0, &mut buf, 150_000).unwrap(),
            Cached::All(100_000)
        );
        assert_eq!(buf, bytes[150_000..250_000]);
        // The file's end: the last bytes and their count, then nothing.
        assert_eq!(
            from_page_cache(&file.0, &mut buf, 250_000).unwrap(),
            Cached::All(50_000)
        );
        assert_eq!(buf[..50_000], bytes[250_000..]);
        assert_eq!(
            from_page_cache(&file.0, &mut buf, 400_000).unwrap(),
            Cached::All(0)
        );
    }

    #[test]
    fn the_blocking_read_finishes_where_the_cached_one_stopped() {
        let bytes = pattern(200_000);
        let (_tmp, file) = file_of(&bytes);
        // As after a cached read that got 70,000 bytes: the rest come from the disk read.
        let mut buf = vec![0; 120_000];
        buf[..70_000].copy_from_slice(&bytes[10_000..80_000]);
        assert_eq!(
            blocking(&file.0, &mut buf, 10_000, 70_000).unwrap(),
            120_000
        );
        assert_eq!(buf, bytes[10_000..130_000]);
        // Past the end: what there is.
        assert_eq!(blocking(&file.0, &mut buf, 150_000, 0).unwrap(), 50_000);
        assert_eq!(buf[..50_000], bytes[150_000..]);
    }

    #[tokio::test]
    async fn reads_give_the_files_bytes_whichever_way_they_come() {
        let bytes = pattern(1 << 20);
        let (_tmp, file) = file_of(&bytes);
        for (offset, len) in [(0, 128 << 10), (1000, 4096), ((1 << 20) - 10, 4096)] {
            let (buf, n) = read_at(file.clone(), vec![0; len], offset as u64)
                .await
                .unwrap();
            let end = (offset + len).min(bytes.len());
            assert_eq!(n, end - offset);
            assert_eq!(buf[..n], bytes[offset..end]);
        }
    }

    /// The finding behind this module: 1,000 fleet nodes joining cold downloads read them
    /// through tokio files, each read a blocking-pool task, and the download's own writes
    /// queued behind thousands of them, so downloads crawled and ever more clients joined.
    #[test]
    fn cached_reads_go_on_while_the_blocking_pool_is_busy() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bytes = pattern(200_000);
        let (_tmp, file) = file_of(&bytes);
        let (release, held) = std::sync::mpsc::channel::<()>();
        runtime.block_on(async {
            let busy = tokio::task::spawn_blocking(move || held.recv());
            let read = read_at(file, vec![0; 128 << 10], 1000);
            let (buf, n) = tokio::time::timeout(std::time::Duration::from_secs(10), read)
                .await
                .expect("a cached read does not wait for the blocking pool")
                .unwrap();
            assert_eq!(buf[..n], bytes[1000..1000 + (128 << 10)]);
            release.send(()).unwrap();
            busy.await.unwrap().unwrap();
        });
    }
}
