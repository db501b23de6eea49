//! Why a byte string is not a ruleset this build can load.

use core::fmt;

/// A ruleset that does not decode: every way [`from_bytes`](super::from_bytes)
/// and [`layout`](super::layout) can refuse their input.
///
/// Every variant that concerns one place in the input names the section and
/// the absolute byte offset (from the start of the ruleset) of the record or
/// field at fault, so that `meshfence inspect` and the filter's log line can
/// point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the format needs at `offset` (the fixed header, the
    /// section directory, or the length the header declares).
    Truncated {
        section: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// The first bytes are not the ruleset label: not a meshfence ruleset.
    BadLabel,
    /// The endianness marker is not the little-endian one.
    BadEndianness { found: u32 },
    /// Written by a newer meshfence whose format this build cannot read.
    NewerVersion { found: u32, supported: u32 },
    /// A format version that never existed (zero).
    UnknownVersion { found: u32 },
    /// The header declares an alignment other than the format's.
    BadAlignment { found: u32, expected: u32 },
    /// The header's total length disagrees with the number of bytes given.
    LengthMismatch { declared: usize, actual: usize },
    /// The bytes are not the ones the checksum was computed over.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The header declares a number of sections other than this version's.
    BadSectionCount { found: u32, expected: u32 },
    /// A section's place or size in the directory is wrong.
    BadSection {
        section: &'static str,
        offset: usize,
        reason: &'static str,
    },
    /// A record refers to records of another section that do not exist, or
    /// are not the next ones in order (see FORMAT.md, "Ranges").
    BadRange {
        section: &'static str,
        offset: usize,
        target: &'static str,
        start: u32,
        count: u32,
        expected_start: usize,
        available: usize,
    },
    /// Records of a section that nothing refers to.
    UnreferencedRecords {
        section: &'static str,
        used: usize,
        count: usize,
    },
    /// A string reference outside the string table.
    StringOutOfBounds {
        section: &'static str,
        offset: usize,
        start: u32,
        len: u32,
        table_len: usize,
    },
    /// A referenced string is not valid UTF-8.
    InvalidUtf8 {
        section: &'static str,
        offset: usize,
    },
    /// An enumeration field holds a value with no meaning.
    BadTag {
        section: &'static str,
        offset: usize,
        field: &'static str,
        value: u32,
    },
    /// The record is well formed but says something the evaluator refuses.
    Invalid {
        section: &'static str,
        offset: usize,
        reason: &'static str,
    },
    /// The strings would expand far beyond the input's size (shared long
    /// strings, which no meshfence encoder writes).
    TooLarge {
        section: &'static str,
        offset: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError::*;
        f.write_str("invalid ruleset: ")?;
        match self {
            Truncated {
                section,
                offset,
                needed,
                available,
            } => write!(
                f,
                "truncated in section `{section}` at offset {offset}: \
                 needs {needed} bytes, {available} available"
            ),
            BadLabel => f.write_str(
                "section `header` at offset 0: the label is not `meshfence-ruleset` \
                 (not a meshfence ruleset)",
            ),
            BadEndianness { found } => write!(
                f,
                "section `header` at offset 20: endianness marker {found:#010x} \
                 is not the little-endian marker 0x0000feff"
            ),
            NewerVersion { found, supported } => write!(
                f,
                "section `header` at offset 24: format version {found} is newer than \
                 this build reads (up to {supported}); upgrade the filter before the ruleset"
            ),
            UnknownVersion { found } => write!(
                f,
                "section `header` at offset 24: format version {found} does not exist"
            ),
            BadAlignment { found, expected } => write!(
                f,
                "section `header` at offset 28: alignment {found} is not {expected}"
            ),
            LengthMismatch { declared, actual } => write!(
                f,
                "section `header` at offset 32: declares {declared} bytes but {actual} were given"
            ),
            ChecksumMismatch { stored, computed } => write!(
                f,
                "section `header` at offset 36: checksum {stored:#010x} does not match \
                 the contents ({computed:#010x}); the ruleset is corrupt"
            ),
            BadSectionCount { found, expected } => write!(
                f,
                "section `header` at offset 40: {found} sections, this version has {expected}"
            ),
            BadSection {
                section,
                offset,
                reason,
            } => write!(f, "section `{section}` (directory entry at offset {offset}): {reason}"),
            BadRange {
                section,
                offset,
                target,
                start,
                count,
                expected_start,
                available,
            } => write!(
                f,
                "section `{section}`, record at offset {offset}: range {start}+{count} of \
                 `{target}` is invalid (must start at {expected_start}; {available} records exist)"
            ),
            UnreferencedRecords {
                section,
                used,
                count,
            } => write!(
                f,
                "section `{section}`: only {used} of its {count} records are referred to"
            ),
            StringOutOfBounds {
                section,
                offset,
                start,
                len,
                table_len,
            } => write!(
                f,
                "section `{section}`, field at offset {offset}: string {start}+{len} lies \
                 outside the {table_len}-byte string table"
            ),
            InvalidUtf8 { section, offset } => write!(
                f,
                "section `{section}`, field at offset {offset}: string is not valid UTF-8"
            ),
            BadTag {
                section,
                offset,
                field,
                value,
            } => write!(
                f,
                "section `{section}`, record at offset {offset}: {field} {value} is not a valid value"
            ),
            Invalid {
                section,
                offset,
                reason,
            } => write!(f, "section `{section}`, record at offset {offset}: {reason}"),
            TooLarge { section, offset } => write!(
                f,
                "section `{section}`, field at offset {offset}: shared strings expand \
                 beyond the decoder's budget"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}
