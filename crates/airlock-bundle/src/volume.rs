//! A bundle split into volumes of a fixed size, written and read as one stream.
//!
//! Volume names: the first volume is `FILE` itself, the next ones `FILE.001`, `FILE.002`, …
//! up to `FILE.999`. Every volume but the last is exactly the split size. Joined in order
//! (`cat FILE FILE.[0-9][0-9][0-9] > WHOLE`) they are the archive; an unsplit bundle is the
//! single volume `FILE`. Volumes are written as `NAME.partial` and renamed only when the
//! whole bundle is complete, so an interrupted `create` leaves no bundle that looks whole.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::BundleError;

/// Highest volume number (`FILE.999`).
pub const MAX_VOLUMES: usize = 1000;

/// The smallest split size: one tar block, so every volume holds something.
pub const MIN_SPLIT: u64 = 512;

/// The path of volume `n` (0 is the bundle's own path).
pub fn volume_path(first: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return first.to_owned();
    }
    let mut name = first.as_os_str().to_owned();
    name.push(format!(".{n:03}"));
    PathBuf::from(name)
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Writes a byte stream into `FILE`, `FILE.001`, … of at most `split` bytes each.
pub struct VolumeWriter {
    first: PathBuf,
    split: Option<u64>,
    current: Option<BufWriter<File>>,
    in_current: u64,
    /// Volumes opened so far (their final names).
    volumes: Vec<PathBuf>,
    finished: bool,
}

impl VolumeWriter {
    pub fn create(first: &Path, split: Option<u64>) -> Result<Self, BundleError> {
        if let Some(split) = split.filter(|&s| s < MIN_SPLIT) {
            return Err(BundleError::SplitTooSmall {
                min: MIN_SPLIT,
                got: split,
            });
        }
        let mut writer = Self {
            first: first.to_owned(),
            split,
            current: None,
            in_current: 0,
            volumes: Vec::new(),
            finished: false,
        };
        writer.open_next()?;
        Ok(writer)
    }

    fn open_next(&mut self) -> Result<(), BundleError> {
        let n = self.volumes.len();
        if n >= MAX_VOLUMES {
            return Err(BundleError::TooManyVolumes {
                split: self.split.unwrap_or(0),
                max: MAX_VOLUMES,
            });
        }
        self.close_current()?;
        let path = volume_path(&self.first, n);
        let partial = partial_path(&path);
        let file = File::create(&partial)
            .map_err(|e| BundleError::io("creating the volume", &partial, e))?;
        self.current = Some(BufWriter::with_capacity(1 << 20, file));
        self.in_current = 0;
        self.volumes.push(path);
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), BundleError> {
        if let Some(current) = self.current.take() {
            let partial = partial_path(self.volumes.last().expect("a current volume"));
            let file = current
                .into_inner()
                .map_err(|e| BundleError::io("writing the volume", &partial, e.into_error()))?;
            file.sync_all()
                .map_err(|e| BundleError::io("syncing the volume", &partial, e))?;
        }
        Ok(())
    }

    /// Closes the last volume, gives every volume its final name (removing volumes left by
    /// an earlier, longer bundle of the same name) and returns the volumes' paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, BundleError> {
        self.close_current()?;
        for path in &self.volumes {
            let partial = partial_path(path);
            std::fs::rename(&partial, path)
                .map_err(|e| BundleError::io("renaming the finished volume", &partial, e))?;
        }
        for n in self.volumes.len()..MAX_VOLUMES {
            let stale = volume_path(&self.first, n);
            match std::fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(BundleError::io("removing the stale volume", &stale, e)),
            }
        }
        self.finished = true;
        Ok(std::mem::take(&mut self.volumes))
    }
}

impl Write for VolumeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.split.is_some_and(|split| self.in_current >= split) {
            self.open_next().map_err(crate::error::into_io)?;
        }
        let room = self.split.map_or(buf.len(), |split| {
            (split - self.in_current).min(buf.len() as u64) as usize
        });
        let current = self
            .current
            .as_mut()
            .expect("a volume is open while writing");
        let written = current.write(&buf[..room])?;
        self.in_current += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for VolumeWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.current = None;
            for path in &self.volumes {
                let _ = std::fs::remove_file(partial_path(path));
            }
        }
    }
}

/// The volumes of a bundle on disk, checked to form one complete sequence.
#[derive(Debug, Clone)]
pub struct Volumes {
    first: PathBuf,
    parts: Vec<(PathBuf, u64)>,
}

impl Volumes {
    /// Finds `FILE` and its consecutive volumes; a gap or a short volume before the last is
    /// an error naming the volume.
    pub fn open(first: &Path) -> Result<Self, BundleError> {
        let mut parts = Vec::new();
        for n in 0..MAX_VOLUMES {
            let path = volume_path(first, n);
            match std::fs::metadata(&path) {
                Ok(meta) => parts.push((path, meta.len())),
                Err(e) if e.kind() == io::ErrorKind::NotFound && n > 0 => break,
                Err(e) => return Err(BundleError::io("opening the bundle", &path, e)),
            }
        }
        let next = parts.len();
        for later in next + 1..MAX_VOLUMES {
            let later = volume_path(first, later);
            if later.exists() {
                return Err(BundleError::VolumeMissing {
                    missing: volume_path(first, next),
                    later,
                });
            }
        }
        let size = parts[0].1;
        for (i, (path, len)) in parts.iter().enumerate().skip(1) {
            let last = i + 1 == parts.len();
            if *len != size && !(last && *len < size) {
                return Err(BundleError::VolumeSize {
                    path: path.clone(),
                    expected: size,
                    actual: *len,
                });
            }
        }
        Ok(Self {
            first: first.to_owned(),
            parts,
        })
    }

    pub fn first(&self) -> &Path {
        &self.first
    }

    pub fn count(&self) -> usize {
        self.parts.len()
    }

    /// The path the next volume would have (for "a later volume is missing" errors).
    pub fn next_path(&self) -> PathBuf {
        volume_path(&self.first, self.parts.len())
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.parts.iter().map(|(path, _)| path.as_path())
    }

    /// Total bytes over every volume.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|(_, len)| len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One reader over every volume in order; it sets `ended` when a read finds nothing
    /// more in the last volume.
    pub fn reader(&self, ended: Arc<AtomicBool>) -> Result<JoinedReader, BundleError> {
        let files = self
            .parts
            .iter()
            .map(|(path, len)| {
                File::open(path)
                    .map(|file| (file, *len))
                    .map_err(|e| BundleError::io("opening the volume", path, e))
            })
            .collect::<Result<_, _>>()?;
        Ok(JoinedReader {
            files,
            current: 0,
            pos: 0,
            ended,
        })
    }
}

/// Reads volumes back to back, and seeks across them.
#[derive(Debug)]
pub struct JoinedReader {
    files: Vec<(File, u64)>,
    current: usize,
    /// Position within the whole stream.
    pos: u64,
    ended: Arc<AtomicBool>,
}

impl Read for JoinedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current < self.files.len() {
            let read = self.files[self.current].0.read(buf)?;
            if read > 0 || buf.is_empty() {
                self.pos += read as u64;
                return Ok(read);
            }
            self.current += 1;
            if let Some((file, _)) = self.files.get_mut(self.current) {
                file.seek(SeekFrom::Start(0))?;
            }
        }
        if !buf.is_empty() {
            self.ended.store(true, Ordering::Relaxed);
        }
        Ok(0)
    }
}

impl Seek for JoinedReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let total: u64 = self.files.iter().map(|(_, len)| len).sum();
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => total.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        let mut start = 0;
        let mut n = 0;
        while n + 1 < self.files.len() && target >= start + self.files[n].1 {
            start += self.files[n].1;
            n += 1;
        }
        self.files[n].0.seek(SeekFrom::Start(target - start))?;
        self.current = n;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, split: Option<u64>, bytes: &[u8]) -> Vec<PathBuf> {
        let mut writer = VolumeWriter::create(&dir.join("b.tar"), split).unwrap();
        for chunk in bytes.chunks(700) {
            writer.write_all(chunk).unwrap();
        }
        writer.finish().unwrap()
    }

    fn read_all(first: &Path) -> Result<Vec<u8>, BundleError> {
        let mut bytes = Vec::new();
        Volumes::open(first)?
            .reader(Arc::default())?
            .read_to_end(&mut bytes)
            .unwrap();
        Ok(bytes)
    }

    #[test]
    fn splits_and_joins() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let volumes = write(dir.path(), Some(1024), &bytes);
        let names: Vec<_> = volumes
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["b.tar", "b.tar.001", "b.tar.002", "b.tar.003", "b.tar.004"]
        );
        assert_eq!(
            std::fs::metadata(&volumes[4]).unwrap().len(),
            5000 - 4 * 1024
        );
        assert_eq!(read_all(&volumes[0]).unwrap(), bytes);

        let mut reader = Volumes::open(&volumes[0])
            .unwrap()
            .reader(Arc::default())
            .unwrap();
        for at in [0u64, 1023, 1024, 3000, 4999] {
            reader.seek(SeekFrom::Start(at)).unwrap();
            let mut one = [0u8; 1];
            reader.read_exact(&mut one).unwrap();
            assert_eq!(one[0], bytes[at as usize], "at {at}");
        }

        // A shorter bundle of the same name removes the volumes it no longer needs.
        let volumes = write(dir.path(), Some(4096), &bytes);
        assert_eq!(volumes.len(), 2);
        assert!(!dir.path().join("b.tar.002").exists());
        assert_eq!(read_all(&volumes[0]).unwrap(), bytes);
        assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        }));
    }

    #[test]
    fn a_gap_or_a_short_volume_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = write(dir.path(), Some(1024), &[7u8; 5000]);
        std::fs::remove_file(&volumes[2]).unwrap();
        let error = read_all(&volumes[0]).unwrap_err().to_string();
        assert!(error.contains("b.tar.002 is missing, but"), "{error}");

        let volumes = write(dir.path(), Some(1024), &[7u8; 5000]);
        let file = File::options().write(true).open(&volumes[1]).unwrap();
        file.set_len(1000).unwrap();
        let error = read_all(&volumes[0]).unwrap_err().to_string();
        assert!(error.contains("b.tar.001 is 1000 bytes"), "{error}");
    }

    #[test]
    fn an_unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = VolumeWriter::create(&dir.path().join("b.tar"), Some(512)).unwrap();
        writer.write_all(&[1u8; 2000]).unwrap();
        drop(writer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(matches!(
            VolumeWriter::create(&dir.path().join("b.tar"), Some(100)),
            Err(BundleError::SplitTooSmall { .. })
        ));
    }
}
