//! Decompression bombs: a small metadata file that expands to gigabytes stops at the
//! caller's bound with [`RepodataError::TooLarge`], for every compression yum metadata
//! comes in, and quickly (reading stops at the bound, it does not decompress everything
//! and then complain).

use std::io::Write;
use std::time::{Duration, Instant};

use airlock_yum::{Decompressed, Detail, RepodataError, decompressed, read_primary};

/// The bound the tests give the reader.
const LIMIT: u64 = 1 << 20;
/// Ample for reading 1 MiB; far too little for inflating gigabytes.
const QUICK: Duration = Duration::from_secs(5);

/// One LZMA2 chunk that decodes to 1 MiB of zeros in 224 bytes, as liblzma writes it
/// (`head -c 1048576 /dev/zero | xz --format=raw --lzma2=preset=6,dict=2MiB`, end marker
/// dropped): control 0xef (dictionary reset, new properties), unpacked 1 MiB, packed 218.
const ZEROS_CHUNK: &[u8] = include_bytes!("fixtures/zeros-1mib.lzma2");

fn crc32(bytes: &[u8]) -> [u8; 4] {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum().to_le_bytes()
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn pad4(out: &mut Vec<u8>, from: usize) {
    while (out.len() - from) % 4 != 0 {
        out.push(0);
    }
}

/// A well-formed `.xz` file (one block, no check) of `mib` MiB of zeros in about
/// `224 * mib` bytes: the seed chunk, then copies of it that keep the dictionary (control
/// 0xcf: state reset and properties only), each decoding to the same megabyte again.
fn xz_bomb(mib: u64) -> Vec<u8> {
    let mut out = vec![0xfd, b'7', b'z', b'X', b'Z', 0x00, 0x00, 0x00];
    out.extend(crc32(&[0x00, 0x00]));
    let block = out.len();
    // Header: size byte, flags (one filter, no sizes), LZMA2 (0x21) with one property
    // byte (dictionary 2 MiB), padding, CRC32.
    let mut header = vec![0x02, 0x00, 0x21, 0x01, 0x10, 0x00, 0x00, 0x00];
    header.extend(crc32(&header));
    out.extend(&header);
    for i in 0..mib {
        let start = out.len();
        out.extend(ZEROS_CHUNK);
        if i > 0 {
            out[start] = 0xcf;
        }
    }
    out.push(0x00);
    let unpadded = out.len() - block;
    pad4(&mut out, block);
    let index_start = out.len();
    out.push(0x00);
    varint(1, &mut out);
    varint(unpadded as u64, &mut out);
    varint(mib << 20, &mut out);
    pad4(&mut out, index_start);
    let index_crc = crc32(&out[index_start..]);
    out.extend(index_crc);
    let backward = ((out.len() - index_start) / 4 - 1) as u32;
    let mut footer = backward.to_le_bytes().to_vec();
    footer.extend([0x00, 0x00]);
    out.extend(crc32(&footer));
    out.extend(footer);
    out.extend(b"YZ");
    out
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB each: four bytes per 128 KiB.
fn zstd_bomb(blocks: u32) -> Vec<u8> {
    // Magic, a descriptor without content size, a 128 KiB window.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = ((128 * 1024) << 3) | (1 << 1) | last;
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.push(b'<');
    }
    frame
}

/// `mib` MiB of one byte, compressed by `encode` a megabyte at a time.
fn compressed<W: Write>(mut encoder: W, mib: usize, finish: impl FnOnce(W) -> Vec<u8>) -> Vec<u8> {
    let megabyte = vec![b'<'; 1 << 20];
    for _ in 0..mib {
        encoder.write_all(&megabyte).unwrap();
    }
    finish(encoder)
}

fn gz_bomb(mib: usize) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    compressed(encoder, mib, |e| e.finish().unwrap())
}

fn bz2_bomb(mib: usize) -> Vec<u8> {
    let encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    compressed(encoder, mib, |e| e.finish().unwrap())
}

/// Reads `bomb` as `href` through `decompressed` and through `read_primary`; both must
/// stop at [`LIMIT`] with `TooLarge`, quickly.
fn assert_refused(href: &str, bomb: &[u8]) {
    let started = Instant::now();
    let result = decompressed(href, bomb, LIMIT).and_then(Decompressed::read_all);
    assert!(
        matches!(result, Err(RepodataError::TooLarge(LIMIT))),
        "{href}: {:?}",
        result.map(|b| b.len())
    );
    let mut packages = 0;
    let result = read_primary(href, bomb, LIMIT, Detail::Everything, |_| {
        packages += 1;
        Ok::<_, RepodataError>(())
    });
    assert!(
        matches!(result, Err(RepodataError::TooLarge(LIMIT))),
        "{href}: {result:?}"
    );
    assert_eq!(packages, 0);
    assert!(started.elapsed() < QUICK, "{href}: {:?}", started.elapsed());
}

#[test]
fn the_xz_bomb_is_real_xz() {
    let bytes = xz_bomb(3);
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut bytes.as_slice(), &mut out).unwrap();
    assert_eq!(out.len(), 3 << 20);
    assert!(out.iter().all(|b| *b == 0));
    // Within the bound, the reader decodes it too.
    let out = decompressed("p.xml.xz", &bytes, 3 << 20)
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(out.len(), 3 << 20);
}

/// Regression: the xz decoder holds a whole block in memory before writing any of it, so
/// the bound was checked only after the bomb had been inflated (4 GiB here, from 900 KiB).
#[test]
fn an_xz_bomb_is_refused_before_it_is_decoded() {
    let bomb = xz_bomb(4096);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    assert_refused("repodata/x-primary.xml.xz", &bomb);
}

#[test]
fn an_xz_stream_with_two_filters_is_refused() {
    // The second LZMA2 filter would decode the first one's (bounded) output again.
    let mut bomb = xz_bomb(1);
    let mut header = vec![0x02, 0x01, 0x21, 0x01, 0x10, 0x21, 0x01, 0x10];
    header.extend(crc32(&header));
    bomb.splice(12..24, header);
    let result = decompressed("p.xml.xz", &bomb, LIMIT).and_then(Decompressed::read_all);
    assert!(
        matches!(result, Err(RepodataError::Decompress(_))),
        "{result:?}"
    );
}

#[test]
fn a_zstd_bomb_stops_at_the_bound() {
    // 4 GiB in 128 KiB.
    assert_refused("repodata/x-primary.xml.zst", &zstd_bomb(32 * 1024));
}

#[test]
fn a_gzip_bomb_stops_at_the_bound() {
    let bomb = gz_bomb(64);
    assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
    assert_refused("repodata/x-primary.xml.gz", &bomb);
    // gzip members concatenate: sixteen copies are one 1 GiB stream.
    assert_refused("repodata/x-primary.xml.gz", &bomb.repeat(16));
}

#[test]
fn a_bzip2_bomb_stops_at_the_bound() {
    let bomb = bz2_bomb(16);
    assert!(bomb.len() < 4096, "{}", bomb.len());
    // bzip2 streams concatenate too: 1,024 copies are 16 GiB.
    assert_refused("repodata/x-primary.xml.bz2", &bomb.repeat(1024));
}

#[test]
fn plain_xml_past_the_bound_is_refused() {
    let big = vec![b' '; (LIMIT + 1) as usize];
    assert_refused("repodata/x-primary.xml", &big);
}
