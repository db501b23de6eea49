//! The binary ruleset format: a versioned, checksummed, little-endian encoding
//! of [`Ruleset`](crate::ir::Ruleset), and its one safe validating decoder.
//!
//! The text below is `ruleset/FORMAT.md`.
//!
#![doc = include_str!("../../FORMAT.md")]

mod decode;
mod encode;
mod error;

use alloc::vec::Vec;

pub use decode::{from_bytes, from_bytes_for_workload};
pub use encode::to_bytes;
pub use error::DecodeError;

/// The label every ruleset starts with: `meshfence-ruleset` padded with NULs
/// to 20 bytes.
pub const LABEL: [u8; 20] = *b"meshfence-ruleset\0\0\0";
/// The endianness marker, written little-endian (bytes `ff fe 00 00`).
pub const ENDIANNESS_MARKER: u32 = 0xFEFF;
/// The format version this build writes and the newest it reads.
pub const VERSION: u32 = 1;
/// Every section starts at a multiple of this, every record size is one, and
/// the total length is one.
pub const ALIGNMENT: u32 = 4;
/// Size of the fixed header, before the section directory.
pub const HEADER_LEN: usize = 48;
/// Size of one section directory entry (offset, byte length).
pub const DIRECTORY_ENTRY_LEN: usize = 8;
/// Strings longer than this are never shared between references: it bounds
/// how far a ruleset can expand when decoded (FORMAT.md, "Budget").
pub const MAX_SHARED_STRING_LEN: usize = 256;

/// The sections of version 1, in directory (and file) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    Mesh,
    Names,
    Policies,
    Selectors,
    Rules,
    Conjunctions,
    Clauses,
    Values,
    Pieces,
    Strings,
}

impl Section {
    /// Every section, in order.
    pub const ALL: [Section; 10] = [
        Section::Mesh,
        Section::Names,
        Section::Policies,
        Section::Selectors,
        Section::Rules,
        Section::Conjunctions,
        Section::Clauses,
        Section::Values,
        Section::Pieces,
        Section::Strings,
    ];

    /// The section's name, as errors and `inspect` print it.
    pub const fn name(self) -> &'static str {
        match self {
            Section::Mesh => "mesh",
            Section::Names => "names",
            Section::Policies => "policies",
            Section::Selectors => "selectors",
            Section::Rules => "rules",
            Section::Conjunctions => "conjunctions",
            Section::Clauses => "clauses",
            Section::Values => "values",
            Section::Pieces => "pieces",
            Section::Strings => "strings",
        }
    }

    /// The size of one record (1 for the string table, which holds bytes).
    pub const fn record_size(self) -> usize {
        match self {
            Section::Mesh => 64,
            Section::Names => 8,
            Section::Policies => 36,
            Section::Selectors => 16,
            Section::Rules => 24,
            Section::Conjunctions => 8,
            Section::Clauses => 20,
            Section::Values => 20,
            Section::Pieces => 12,
            Section::Strings => 1,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Where one section lies in an encoded ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionLayout {
    pub section: Section,
    /// Byte offset from the start of the ruleset.
    pub offset: usize,
    /// Size in bytes (without the padding that may follow it).
    pub len: usize,
    /// Number of records (bytes, for the string table).
    pub records: usize,
}

impl SectionLayout {
    pub fn name(&self) -> &'static str {
        self.section.name()
    }
}

/// The shape of an encoded ruleset, as `meshfence inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub version: u32,
    pub alignment: u32,
    pub total_len: usize,
    pub checksum: u32,
    /// The fixed header plus the section directory.
    pub header_len: usize,
    /// The sections, in file order.
    pub sections: Vec<SectionLayout>,
}

impl Layout {
    /// The layout of one section.
    pub fn section(&self, section: Section) -> Option<&SectionLayout> {
        self.sections.get(section.index())
    }

    /// Bytes spent on alignment padding between and after sections.
    pub fn padding(&self) -> usize {
        let used: usize = self.sections.iter().map(|s| s.len).sum();
        self.total_len.saturating_sub(self.header_len + used)
    }
}

/// Checks the header, the checksum and the section directory (not the
/// records) and reports where each section lies.
pub fn layout(bytes: &[u8]) -> Result<Layout, DecodeError> {
    decode::read_layout(bytes)
}

/// The CRC-32 of everything but the checksum field itself.
fn checksum(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes.get(..36).unwrap_or_default());
    h.update(bytes.get(40..).unwrap_or_default());
    h.finalize()
}

/// Attribute tags in clause records.
mod tag {
    pub const PEER_URI: u8 = 0;
    pub const SOURCE_IP: u8 = 1;
    pub const REMOTE_IP: u8 = 2;
    pub const DESTINATION_IP: u8 = 3;
    pub const DESTINATION_PORT: u8 = 4;
    pub const SNI: u8 = 5;
    pub const HOST: u8 = 6;
    pub const METHOD: u8 = 7;
    pub const PATH: u8 = 8;
    pub const HEADER: u8 = 9;
    pub const REQUEST_AUTH: u8 = 10;

    pub const V_EXACT: u8 = 0;
    pub const V_PREFIX: u8 = 1;
    pub const V_SUFFIX: u8 = 2;
    pub const V_CONTAINS: u8 = 3;
    pub const V_PRESENT: u8 = 4;
    pub const V_PATTERN: u8 = 5;
    pub const V_SERVICE_ACCOUNT: u8 = 6;
    pub const V_CIDR: u8 = 7;
    pub const V_PORT: u8 = 8;
    pub const V_PATH_TEMPLATE: u8 = 9;

    pub const P_LITERAL: u8 = 0;
    pub const P_ANY_RUN: u8 = 1;
    pub const P_ANY_NON_EMPTY_RUN: u8 = 2;
    pub const P_SEGMENT_RUN: u8 = 3;

    pub const FLAG_IGNORE_CASE: u8 = 1;
}

#[cfg(test)]
mod tests;
