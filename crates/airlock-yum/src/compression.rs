//! Metadata files decompressed by their name's extension, within a bound.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::rc::Rc;

use crate::RepodataError;

/// `bytes` (the file at `href`) decompressed by `href`'s extension, as a reader that fails
/// once more than `limit` bytes came out.
///
/// Memory stays bounded whatever `bytes` claims. `.gz`, `.bz2` and `.xml` stream through
/// fixed buffers (bzip2's are the largest, a few MiB for its 900 KB blocks); `.zst` also
/// keeps its window, which zstd caps at 128 MiB (`windowLogMax` 27). `.xz` is decoded whole up front (its decoder writes rather than
/// reads, and holds a whole block): its chunk headers are added up first and a stream
/// that says it decompresses to more than `limit` is refused before decoding, so decoding
/// holds at most about three times `limit` (the block as it grows, and its copy).
///
/// A read error of the decompressor (past the bound, or a corrupt stream) is reported by
/// [`Decompressed::check`].
///
/// # Errors
/// [`RepodataError::UnknownCompression`] for an extension other than `.gz`, `.zst`, `.xz`,
/// `.bz2` and `.xml`; [`RepodataError::Decompress`] or [`RepodataError::TooLarge`] for an
/// `.xz` stream that is corrupt or too large, or a `.zst` stream that cannot be started.
pub fn decompressed<'a>(
    href: &str,
    bytes: &'a [u8],
    limit: u64,
) -> Result<Decompressed<'a>, RepodataError> {
    let extension = Path::new(href)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let inner: Box<dyn Read + 'a> = match extension.as_deref() {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        Some("zst") => Box::new(
            zstd::stream::read::Decoder::new(bytes)
                .map_err(|e| RepodataError::Decompress(e.to_string()))?,
        ),
        Some("bz2") => Box::new(bzip2::read::MultiBzDecoder::new(bytes)),
        Some("xz") => {
            crate::xz::declared_size(bytes, limit)?;
            let mut output = Bounded {
                bytes: Vec::new(),
                limit,
                exceeded: false,
            };
            lzma_rs::xz_decompress(&mut BufReader::new(bytes), &mut output).map_err(|e| {
                if output.exceeded {
                    RepodataError::TooLarge(limit)
                } else {
                    RepodataError::Decompress(e.to_string())
                }
            })?;
            Box::new(std::io::Cursor::new(output.bytes))
        }
        Some("xml") => Box::new(bytes),
        other => {
            return Err(RepodataError::UnknownCompression(
                other.unwrap_or_default().to_owned(),
            ));
        }
    };
    let failure = Rc::new(RefCell::new(None));
    Ok(Decompressed {
        reader: BufReader::new(Limited {
            inner,
            left: limit,
            limit,
            failure: Rc::clone(&failure),
        }),
        failure,
    })
}

/// A decompressing reader with a bound; see [`decompressed`].
pub struct Decompressed<'a> {
    reader: BufReader<Limited<'a>>,
    /// The decompressor's first failure, kept here because a parser reading through it
    /// reports it only as an I/O error.
    failure: Rc<RefCell<Option<RepodataError>>>,
}

impl Decompressed<'_> {
    /// `error` of a reader of this stream, or the decompressor's own failure under it
    /// ([`RepodataError::TooLarge`], [`RepodataError::Decompress`]) when it had one.
    #[must_use]
    pub fn check(&self, error: RepodataError) -> RepodataError {
        self.failure.borrow_mut().take().unwrap_or(error)
    }

    /// Everything, decompressed.
    ///
    /// # Errors
    /// [`RepodataError::TooLarge`] past the bound, [`RepodataError::Decompress`] for a
    /// corrupt stream.
    pub fn read_all(mut self) -> Result<Vec<u8>, RepodataError> {
        let mut out = Vec::new();
        self.reader
            .read_to_end(&mut out)
            .map_err(|e| self.check(RepodataError::Decompress(e.to_string())))?;
        Ok(out)
    }
}

impl Read for Decompressed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

impl BufRead for Decompressed<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.reader.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.reader.consume(amount);
    }
}

/// A reader that fails once more than `limit` bytes came out of `inner`, and records why
/// it failed.
struct Limited<'a> {
    inner: Box<dyn Read + 'a>,
    left: u64,
    limit: u64,
    failure: Rc<RefCell<Option<RepodataError>>>,
}

impl Read for Limited<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let fail = |failure: &RefCell<Option<RepodataError>>, error: RepodataError| {
            let message = error.to_string();
            failure.borrow_mut().get_or_insert(error);
            std::io::Error::other(message)
        };
        let n = self
            .inner
            .read(buf)
            .map_err(|e| fail(&self.failure, RepodataError::Decompress(e.to_string())))?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| fail(&self.failure, RepodataError::TooLarge(self.limit)))?;
        Ok(n)
    }
}

/// A writer refusing more than `limit` bytes.
struct Bounded {
    bytes: Vec<u8>,
    limit: u64,
    exceeded: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.bytes.len() + buf.len()) as u64 > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] = b"<metadata>some metadata, repeated repeated repeated</metadata>";

    fn compressed(extension: &str) -> Vec<u8> {
        match extension {
            "gz" => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(TEXT).unwrap();
                gz.finish().unwrap()
            }
            "zst" => zstd::encode_all(TEXT, 1).unwrap(),
            "bz2" => {
                let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                bz.write_all(TEXT).unwrap();
                bz.finish().unwrap()
            }
            "xz" => {
                let mut out = Vec::new();
                lzma_rs::xz_compress(&mut &*TEXT, &mut out).unwrap();
                out
            }
            _ => TEXT.to_vec(),
        }
    }

    #[test]
    fn every_compression_round_trips_within_its_bound() {
        for extension in ["gz", "zst", "bz2", "xz", "xml"] {
            let bytes = compressed(extension);
            let href = format!("repodata/x-primary.xml.{extension}").replace(".xml.xml", ".xml");
            let out = decompressed(&href, &bytes, TEXT.len() as u64)
                .unwrap()
                .read_all()
                .unwrap();
            assert_eq!(out, TEXT, "{extension}");
            let small = TEXT.len() as u64 - 1;
            let error = decompressed(&href, &bytes, small).and_then(Decompressed::read_all);
            assert!(
                matches!(error, Err(RepodataError::TooLarge(n)) if n == small),
                "{extension}: {error:?}"
            );
        }
    }

    #[test]
    fn corrupt_and_unknown() {
        assert!(matches!(
            decompressed("p.xml.lz4", TEXT, 1000),
            Err(RepodataError::UnknownCompression(e)) if e == "lz4"
        ));
        for extension in ["gz", "zst", "bz2", "xz"] {
            let href = format!("p.xml.{extension}");
            let result = decompressed(&href, TEXT, 1000).and_then(Decompressed::read_all);
            assert!(
                matches!(result, Err(RepodataError::Decompress(_))),
                "{extension}: {result:?}"
            );
        }
    }
}
