//! Segment and snapshot files: their names, headers and record framing, and the scan that
//! tells a torn tail (a crash mid-write: cut it off) from corruption before the tail (stop).
//!
//! A segment is a 32-byte header (`SPJOURNL`, format version, segment index, first sequence)
//! and then records: `length u32 | crc32c u32 | sequence u64 | synced u64 | payload`,
//! little-endian, where `length` counts what follows the checksum, and the checksum covers
//! the length and all that follows. `synced` is the highest sequence known synced to disk
//! when the record was written: a valid record after a damaged one proves the damage is
//! corruption only if it says the damaged record had been synced; otherwise the damage is in
//! writes that were never synced (pages of an unsynced write may reach the disk in any order
//! before a power cut), a torn tail. Version 2 segments, without `synced`, are still read.
//! Segments are preallocated, so the end of the records is the first all-zero header.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"SPJOURNL";
pub(super) const SNAPSHOT_MAGIC: &[u8; 8] = b"SPSNAPSH";
/// Bumped whenever the bytes of a segment change meaning. Version 7 added a SKU's platform
/// listings and allocation, framed as version 6; version 6 added forgetting (the
/// orders forgotten past their windows), framed as version 5; version 5 added lost demand
/// (refused orders' units), framed as version 4; version 4 added the alert engine's records
/// (time passing, acknowledgements), framed as version 3; version 3 added `synced` to each
/// record. Versions 2 to 4 are still read.
pub(super) const FORMAT_VERSION: u32 = 7;
const FORMAT_VERSION_NO_CHANNELS: u32 = 6;
const FORMAT_VERSION_NO_FORGET: u32 = 5;
const FORMAT_VERSION_NO_LOST: u32 = 4;
const FORMAT_VERSION_NO_ALERTS: u32 = 3;
/// The record formats a replicated log may hold for this node to read it (the cluster came
/// with format 4).
pub(super) const LOG_FORMATS_READ: &[u32] = &[
    FORMAT_VERSION_NO_LOST,
    FORMAT_VERSION_NO_FORGET,
    FORMAT_VERSION_NO_CHANNELS,
    FORMAT_VERSION,
];
const FORMAT_VERSION_UNSYNCED: u32 = 2;
/// Bumped whenever the bytes of a snapshot change meaning.
pub(super) const SNAPSHOT_FORMAT_VERSION: u32 = 2;
pub(super) const SEGMENT_HEADER_BYTES: u64 = 32;
pub(super) const SNAPSHOT_HEADER_BYTES: usize = 40;
pub(super) const RECORD_HEADER_BYTES: usize = 8;
/// The largest record: a 64-line order is a few kilobytes, so anything near this is damage.
pub(super) const RECORD_BYTES_MAX: u32 = 1024 * 1024;

pub(super) fn segment_path(directory: &Path, index: u64) -> PathBuf {
    directory.join(format!("segment-{index:016}.log"))
}

pub(super) fn snapshot_path(directory: &Path, sequence: u64) -> PathBuf {
    directory.join(format!("snapshot-{sequence:020}.snap"))
}

/// Numbered files of one kind in `directory`, sorted by number.
pub(super) fn list(
    directory: &Path,
    prefix: &str,
    suffix: &str,
) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if let Some(number) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .and_then(|number| number.parse::<u64>().ok())
        {
            found.push((number, path));
        }
    }
    found.sort();
    Ok(found)
}

pub(super) fn segment_header(
    index: u64,
    first_sequence: u64,
) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&index.to_le_bytes());
    header[24..32].copy_from_slice(&first_sequence.to_le_bytes());
    header
}

/// The first sequence of a segment header, when it is a segment header of a version this
/// build reads.
pub(super) fn header_first_sequence(header: &[u8; SEGMENT_HEADER_BYTES as usize]) -> Option<u64> {
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let valid = &header[..8] == SEGMENT_MAGIC
        && (version == FORMAT_VERSION
            || version == FORMAT_VERSION_NO_CHANNELS
            || version == FORMAT_VERSION_NO_FORGET
            || version == FORMAT_VERSION_NO_LOST
            || version == FORMAT_VERSION_NO_ALERTS
            || version == FORMAT_VERSION_UNSYNCED);
    valid.then(|| u64::from_le_bytes(header[24..32].try_into().expect("8 bytes")))
}

/// Appends one framed record to `buffer`, written when everything up to `synced` was synced;
/// `payload` is written by `encode`.
pub(super) fn frame(
    buffer: &mut Vec<u8>,
    sequence: u64,
    synced: u64,
    encode: impl FnOnce(&mut Vec<u8>),
) {
    let start = buffer.len();
    buffer.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    buffer.extend_from_slice(&sequence.to_le_bytes());
    buffer.extend_from_slice(&synced.to_le_bytes());
    encode(buffer);
    let length = u32::try_from(buffer.len() - start - RECORD_HEADER_BYTES)
        .expect("a record is far smaller than 4 GiB");
    buffer[start..start + 4].copy_from_slice(&length.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&length.to_le_bytes()),
        &buffer[start + RECORD_HEADER_BYTES..],
    );
    buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What a scan of one segment found.
pub(super) struct Scan {
    /// Each record's sequence, offset and payload.
    pub(super) records: Vec<(u64, u64, Vec<u8>)>,
    /// Where the valid records end.
    pub(super) end: u64,
    pub(super) damage: Option<Damage>,
}

/// A record that failed its checks.
pub(super) struct Damage {
    pub(super) offset: u64,
    pub(super) reason: String,
    /// Only zeros follow it: a write cut short by a crash, safe to cut off.
    pub(super) torn_tail: bool,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ScanError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a journal segment of format version {FORMAT_VERSION_UNSYNCED} to {FORMAT_VERSION}"
    )]
    Header { path: PathBuf },
}

/// Reads every valid record of a segment and reports the first damaged one, if any.
pub(super) fn scan(path: &Path, expected_index: u64) -> Result<Scan, ScanError> {
    let io = |source| ScanError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io)?;
    let header_ok = SEGMENT_HEADER_BYTES as usize <= bytes.len()
        && &bytes[..8] == SEGMENT_MAGIC
        && bytes[16..24] == expected_index.to_le_bytes();
    let version = bytes
        .get(8..12)
        .map(|version| u32::from_le_bytes(version.try_into().expect("4 bytes")));
    // What precedes the payload in a record's body: the sequence, and `synced` from v3 on.
    let prefix_bytes = match version {
        Some(
            FORMAT_VERSION
            | FORMAT_VERSION_NO_CHANNELS
            | FORMAT_VERSION_NO_FORGET
            | FORMAT_VERSION_NO_LOST
            | FORMAT_VERSION_NO_ALERTS,
        ) if header_ok => 16,
        Some(FORMAT_VERSION_UNSYNCED) if header_ok => 8,
        _ => {
            return Err(ScanError::Header {
                path: path.to_owned(),
            });
        }
    };
    let first_sequence = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    let mut expected_sequence = first_sequence;
    let damage = loop {
        let all_zero_after = |from: usize| {
            bytes
                .get(from..)
                .is_none_or(|rest| rest.iter().all(|byte| *byte == 0))
        };
        if bytes.len() < offset + RECORD_HEADER_BYTES {
            if all_zero_after(offset) {
                break None;
            }
            break Some((
                offset,
                "a record header cut short".to_owned(),
                offset + RECORD_HEADER_BYTES,
            ));
        }
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().expect("4 bytes"));
        if length == 0 && crc == 0 {
            if all_zero_after(offset) {
                break None;
            }
            break Some((
                offset,
                "an empty record header before more data".to_owned(),
                offset + RECORD_HEADER_BYTES,
            ));
        }
        let body_start = offset + RECORD_HEADER_BYTES;
        if !(prefix_bytes as u32..=RECORD_BYTES_MAX).contains(&length) {
            break Some((offset, format!("a record length of {length}"), body_start));
        }
        let body_end = body_start + length as usize;
        if bytes.len() < body_end {
            break Some((offset, "a record cut short".to_owned(), bytes.len()));
        }
        let actual = crc32c::crc32c_append(
            crc32c::crc32c(&length.to_le_bytes()),
            &bytes[body_start..body_end],
        );
        if actual != crc {
            break Some((offset, "a checksum mismatch".to_owned(), body_end));
        }
        let sequence = u64::from_le_bytes(
            bytes[body_start..body_start + 8]
                .try_into()
                .expect("8 bytes"),
        );
        if sequence != expected_sequence {
            break Some((
                offset,
                format!("sequence {sequence} where {expected_sequence} was due"),
                body_end,
            ));
        }
        records.push((
            sequence,
            offset as u64,
            bytes[body_start + prefix_bytes..body_end].to_vec(),
        ));
        expected_sequence = expected_sequence.saturating_add(1);
        offset = body_end;
    };
    let damage = damage.map(|(at, reason, _extent)| Damage {
        offset: at as u64,
        reason,
        torn_tail: !later_record_proves_sync(&bytes, at + 1, expected_sequence, prefix_bytes),
    });
    Ok(Scan {
        records,
        end: offset as u64,
        damage,
    })
}

/// Reads a snapshot: its sequence and its body, checked.
/// The largest sequence a file may name: far beyond any real journal, and far enough from
/// `u64::MAX` that no sum of sequences can overflow.
pub(super) const SEQUENCE_MAX: u64 = u64::MAX / 4;

/// The checksum of a snapshot: its header's first 32 bytes (magic, version, sequence,
/// length) and its body, so a flipped bit in the sequence is caught like one in the body.
fn snapshot_crc(header: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..32]), body)
}

/// Whether a whole, valid record starting anywhere from `from` on proves that the damaged
/// record `damaged` had been synced: that tells corruption (a synced record went bad) from a
/// torn tail (writes never synced, whose pages may come back in any order, as zeros or as
/// old contents, after a power cut). In a version 2 segment, without `synced`, any valid
/// later record counts as proof.
///
/// Linear in the bytes: a candidate's sequence must be plausible (no more records can follow
/// than there are bytes) before its checksum is computed, so garbage costs no checksums.
fn later_record_proves_sync(bytes: &[u8], from: usize, damaged: u64, prefix_bytes: usize) -> bool {
    let sequence_max = damaged.saturating_add(bytes.len() as u64);
    let mut offset = from;
    while offset + RECORD_HEADER_BYTES + prefix_bytes <= bytes.len() {
        let at =
            |start: usize| u64::from_le_bytes(bytes[start..start + 8].try_into().expect("8 bytes"));
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        let body_start = offset + RECORD_HEADER_BYTES;
        let body_end = body_start + length as usize;
        let sequence = at(body_start);
        let plausible = (prefix_bytes as u32..=RECORD_BYTES_MAX).contains(&length)
            && body_end <= bytes.len()
            && (damaged..=sequence_max).contains(&sequence);
        if plausible {
            let crc =
                u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().expect("4 bytes"));
            let actual = crc32c::crc32c_append(
                crc32c::crc32c(&length.to_le_bytes()),
                &bytes[body_start..body_end],
            );
            let synced = if prefix_bytes == 16 {
                at(body_start + 8)
            } else {
                u64::MAX
            };
            if actual == crc && damaged <= synced {
                return true;
            }
        }
        offset += 1;
    }
    false
}

/// Reads a snapshot whose file name says `named_sequence`: its body, checked.
pub(super) fn read_snapshot(path: &Path, named_sequence: u64) -> Result<(u64, Vec<u8>), String> {
    let mut file = File::open(path).map_err(|error| error.to_string())?;
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    file.read_exact(&mut header)
        .map_err(|error| format!("header: {error}"))?;
    if &header[..8] != SNAPSHOT_MAGIC || header[8..12] != SNAPSHOT_FORMAT_VERSION.to_le_bytes() {
        return Err(format!(
            "not a snapshot of format version {SNAPSHOT_FORMAT_VERSION}"
        ));
    }
    let sequence = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let length = u64::from_le_bytes(header[24..32].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(header[32..36].try_into().expect("4 bytes"));
    if sequence != named_sequence || SEQUENCE_MAX < sequence {
        return Err(format!(
            "its header says sequence {sequence}, its name {named_sequence}"
        ));
    }
    let file_length = file
        .seek(SeekFrom::End(0))
        .map_err(|error| error.to_string())?;
    if Some(file_length) != (SNAPSHOT_HEADER_BYTES as u64).checked_add(length) {
        return Err(format!(
            "{file_length} bytes where the header announces {length} of body"
        ));
    }
    file.seek(SeekFrom::Start(SNAPSHOT_HEADER_BYTES as u64))
        .map_err(|error| error.to_string())?;
    let mut body = Vec::new();
    file.read_to_end(&mut body)
        .map_err(|error| error.to_string())?;
    if snapshot_crc(&header, &body) != crc {
        return Err("a checksum mismatch".to_owned());
    }
    Ok((sequence, body))
}

pub(super) fn snapshot_header(sequence: u64, body: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[..8].copy_from_slice(SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&sequence.to_le_bytes());
    header[24..32].copy_from_slice(&(body.len() as u64).to_le_bytes());
    let crc = snapshot_crc(&header, body);
    header[32..36].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Makes a rename or a new file in `directory` durable.
pub(super) fn sync_directory(directory: &Path) -> std::io::Result<()> {
    File::open(directory)?.sync_all()
}

/// The records of one replicated batch (framed as in a segment, with no header), each
/// checked: `(sequence, payload)`. Any damage is an error naming its offset: a replicated
/// batch arrives whole or not at all, so nothing in it is a torn tail.
pub(super) fn parse_records(bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let header = bytes
            .get(offset..offset + RECORD_HEADER_BYTES)
            .ok_or_else(|| format!("byte {offset}: a record header cut short"))?;
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if RECORD_BYTES_MAX < length || (length as usize) < 16 {
            return Err(format!("byte {offset}: a record of {length} bytes"));
        }
        let start = offset + RECORD_HEADER_BYTES;
        let body = bytes
            .get(start..start + length as usize)
            .ok_or_else(|| format!("byte {offset}: a record cut short"))?;
        let expected = crc32c::crc32c_append(crc32c::crc32c(&length.to_le_bytes()), body);
        if expected != crc {
            return Err(format!("byte {offset}: checksum mismatch"));
        }
        let sequence = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        records.push((sequence, &body[16..]));
        offset = start + length as usize;
    }
    Ok(records)
}
