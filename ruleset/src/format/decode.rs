//! The one safe, validating decoder.
//!
//! It reads records depth first, in the order the encoder wrote them, keeping
//! one cursor per section: every range must start at its section's cursor, so
//! each record is read at most once and the decoded ruleset is at most a
//! small multiple of the input (FORMAT.md, "Ranges" and "Budget").

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::eval::{applies_to, Workload};

use super::{
    checksum, tag, DecodeError, Layout, Section, SectionLayout, ALIGNMENT, DIRECTORY_ENTRY_LEN,
    ENDIANNESS_MARKER, HEADER_LEN, LABEL, MAX_SHARED_STRING_LEN, VERSION,
};
use crate::ir::{
    Action, Attribute, Cidr, Clause, Conjunction, IdentityHeader, IdentityValue, MeshSettings,
    PathPolicy, PatternPiece, Policy, Rule, Ruleset, SpoofPolicy, StrMatch, StrMatchKind,
    ValueMatch,
};

type Result<T> = core::result::Result<T, DecodeError>;

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn align_up(n: usize) -> Option<usize> {
    let a = ALIGNMENT as usize;
    Some(n.checked_add(a - 1)? / a * a)
}

/// Checks the header, the checksum and the directory.
pub(super) fn read_layout(bytes: &[u8]) -> Result<Layout> {
    let header = |offset: usize, needed: usize| DecodeError::Truncated {
        section: "header",
        offset,
        needed,
        available: bytes.len(),
    };
    match bytes.get(..LABEL.len()) {
        Some(l) if l == LABEL => {}
        Some(_) => return Err(DecodeError::BadLabel),
        None if LABEL.starts_with(bytes) => return Err(header(0, HEADER_LEN)),
        None => return Err(DecodeError::BadLabel),
    }
    let field = |at: usize| le_u32(bytes, at).ok_or_else(|| header(0, HEADER_LEN));
    let marker = field(20)?;
    if marker != ENDIANNESS_MARKER {
        return Err(DecodeError::BadEndianness { found: marker });
    }
    let version = field(24)?;
    if version == 0 {
        return Err(DecodeError::UnknownVersion { found: version });
    }
    if version > VERSION {
        return Err(DecodeError::NewerVersion {
            found: version,
            supported: VERSION,
        });
    }
    let alignment = field(28)?;
    if alignment != ALIGNMENT {
        return Err(DecodeError::BadAlignment {
            found: alignment,
            expected: ALIGNMENT,
        });
    }
    let total_len = field(32)? as usize;
    let stored = field(36)?;
    let section_count = field(40)?;
    let reserved = field(44)?;
    if bytes.len() < total_len {
        return Err(DecodeError::Truncated {
            section: "body",
            offset: bytes.len(),
            needed: total_len,
            available: bytes.len(),
        });
    }
    if bytes.len() > total_len {
        return Err(DecodeError::LengthMismatch {
            declared: total_len,
            actual: bytes.len(),
        });
    }
    let computed = checksum(bytes);
    if computed != stored {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    if align_up(total_len) != Some(total_len) {
        return Err(DecodeError::Invalid {
            section: "header",
            offset: 32,
            reason: "the total length is not a multiple of the alignment",
        });
    }
    if reserved != 0 {
        return Err(DecodeError::Invalid {
            section: "header",
            offset: 44,
            reason: "reserved field is not zero",
        });
    }
    let expected = Section::ALL.len() as u32;
    if section_count != expected {
        return Err(DecodeError::BadSectionCount {
            found: section_count,
            expected,
        });
    }
    let header_len = HEADER_LEN + Section::ALL.len() * DIRECTORY_ENTRY_LEN;
    if total_len < header_len {
        return Err(DecodeError::Truncated {
            section: "directory",
            offset: HEADER_LEN,
            needed: header_len,
            available: total_len,
        });
    }
    let mut sections = Vec::with_capacity(Section::ALL.len());
    let mut end = header_len;
    for (i, &section) in Section::ALL.iter().enumerate() {
        let entry = HEADER_LEN + i * DIRECTORY_ENTRY_LEN;
        let bad = |reason| DecodeError::BadSection {
            section: section.name(),
            offset: entry,
            reason,
        };
        let offset = le_u32(bytes, entry).ok_or(bad("directory entry is truncated"))? as usize;
        let len = le_u32(bytes, entry + 4).ok_or(bad("directory entry is truncated"))? as usize;
        if Some(offset) != align_up(end) {
            return Err(bad(
                "does not start right after the previous section (aligned to 4 bytes)",
            ));
        }
        if padding_is_nonzero(bytes, end, offset) {
            return Err(bad("the padding before it is not zero"));
        }
        let stop = offset
            .checked_add(len)
            .filter(|&e| e <= total_len)
            .ok_or(bad("extends past the end of the ruleset"))?;
        if len / section.record_size() * section.record_size() != len {
            return Err(bad("its length is not a whole number of records"));
        }
        if section == Section::Mesh && len != section.record_size() {
            return Err(bad("must hold exactly one record"));
        }
        sections.push(SectionLayout {
            section,
            offset,
            len,
            records: len / section.record_size(),
        });
        end = stop;
    }
    if align_up(end) != Some(total_len) || padding_is_nonzero(bytes, end, total_len) {
        return Err(DecodeError::Invalid {
            section: "strings",
            offset: end,
            reason: "the ruleset does not end with the last section (plus zero padding)",
        });
    }
    Ok(Layout {
        version,
        alignment,
        total_len,
        checksum: stored,
        header_len,
        sections,
    })
}

fn padding_is_nonzero(bytes: &[u8], from: usize, to: usize) -> bool {
    bytes
        .get(from..to)
        .is_some_and(|pad| pad.iter().any(|&b| b != 0))
}

/// Decodes and validates a ruleset.
///
/// Checks, in order: the label, the endianness marker, the format version (a
/// newer one is [`DecodeError::NewerVersion`]), the alignment, the total
/// length, the checksum, the section directory, then every record: each range
/// and string reference, each tag and reserved byte, and the rules the
/// evaluator relies on (FORMAT.md, "Validation"). Never panics; allocates only
/// after a count has been checked against the bytes that hold its records.
pub fn from_bytes(bytes: &[u8]) -> Result<Ruleset> {
    decode(bytes, None)
}

/// Like [`from_bytes`], validating every record of the ruleset just as
/// thoroughly, but keeping only the policies that apply to `workload` (and the
/// mesh settings): what one sidecar needs. The others are checked without
/// being built, so loading costs little more than reading the bytes, and a
/// VM holds only its own workload's rules. Rule references in the decisions
/// of the result index its own, shorter, policy list.
pub fn from_bytes_for_workload(bytes: &[u8], workload: &Workload<'_>) -> Result<Ruleset> {
    decode(bytes, Some(workload))
}

fn decode(bytes: &[u8], workload: Option<&Workload<'_>>) -> Result<Ruleset> {
    let layout = read_layout(bytes)?;
    let mut d = Decoder {
        bytes,
        sections: [(0, 0); 10],
        cursors: [0; 10],
        string_bytes: 0,
        string_refs: 0,
        build: true,
    };
    for (slot, s) in d.sections.iter_mut().zip(layout.sections.iter()) {
        *slot = (s.offset, s.records);
    }
    let mesh = d.mesh()?;
    let policies = d.policies(workload, &mesh.root_namespace)?;
    for &section in &Section::ALL {
        if section == Section::Strings || section == Section::Mesh {
            continue;
        }
        let used = d.cursor(section);
        let count = d.count(section);
        if used != count {
            return Err(DecodeError::UnreferencedRecords {
                section: section.name(),
                used,
                count,
            });
        }
    }
    Ok(Ruleset { mesh, policies })
}

/// One fixed-size record and where it lies.
#[derive(Clone, Copy)]
struct Rec<'a> {
    section: Section,
    offset: usize,
    bytes: &'a [u8],
}

impl Rec<'_> {
    fn short(&self) -> DecodeError {
        DecodeError::Truncated {
            section: self.section.name(),
            offset: self.offset,
            needed: self.section.record_size(),
            available: self.bytes.len(),
        }
    }
    fn u8(&self, at: usize) -> Result<u8> {
        self.bytes.get(at).copied().ok_or_else(|| self.short())
    }
    fn u16(&self, at: usize) -> Result<u16> {
        let b = self.bytes.get(at..at + 2).ok_or_else(|| self.short())?;
        Ok(u16::from_le_bytes(b.try_into().map_err(|_| self.short())?))
    }
    fn u32(&self, at: usize) -> Result<u32> {
        le_u32(self.bytes, at).ok_or_else(|| self.short())
    }
    fn zero(&self, from: usize, to: usize, what: &'static str) -> Result<()> {
        let b = self.bytes.get(from..to).ok_or_else(|| self.short())?;
        if b.iter().any(|&x| x != 0) {
            return Err(self.invalid(what));
        }
        Ok(())
    }
    fn invalid(&self, reason: &'static str) -> DecodeError {
        DecodeError::Invalid {
            section: self.section.name(),
            offset: self.offset,
            reason,
        }
    }
    fn bad_tag(&self, field: &'static str, value: u32) -> DecodeError {
        DecodeError::BadTag {
            section: self.section.name(),
            offset: self.offset,
            field,
            value,
        }
    }
    fn flag(&self, at: usize, field: &'static str) -> Result<bool> {
        match self.u8(at)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.bad_tag(field, u32::from(v))),
        }
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    /// Per section: offset and record count.
    sections: [(usize, usize); 10],
    /// Per section: the next record a range must start at.
    cursors: [usize; 10],
    /// Bytes of strings decoded so far, and references read (the budget).
    string_bytes: usize,
    string_refs: usize,
    /// Build what is decoded (else only validate it: no allocation).
    build: bool,
}

impl<'a> Decoder<'a> {
    fn count(&self, s: Section) -> usize {
        self.sections.get(s.index()).map_or(0, |x| x.1)
    }

    fn cursor(&self, s: Section) -> usize {
        self.cursors.get(s.index()).copied().unwrap_or(0)
    }

    fn record(&self, s: Section, index: usize) -> Result<Rec<'a>> {
        let (base, _) = self.sections.get(s.index()).copied().unwrap_or((0, 0));
        let size = s.record_size();
        let offset = index
            .checked_mul(size)
            .and_then(|o| o.checked_add(base))
            .unwrap_or(usize::MAX);
        let bytes = offset
            .checked_add(size)
            .and_then(|end| self.bytes.get(offset..end))
            .ok_or(DecodeError::Truncated {
                section: s.name(),
                offset,
                needed: size,
                available: self.bytes.len().saturating_sub(offset),
            })?;
        Ok(Rec {
            section: s,
            offset,
            bytes,
        })
    }

    /// Reads the `(start, count)` range at `at` in `rec`, which must be the
    /// next `count` records of `target`, and takes them.
    fn range(&mut self, rec: &Rec<'_>, at: usize, target: Section) -> Result<Range<usize>> {
        let start = rec.u32(at)?;
        let count = rec.u32(at + 4)?;
        let expected_start = self.cursor(target);
        let available = self.count(target);
        let end = (start as usize).checked_add(count as usize);
        match end {
            Some(end) if start as usize == expected_start && end <= available => {
                if let Some(c) = self.cursors.get_mut(target.index()) {
                    *c = end;
                }
                Ok(start as usize..end)
            }
            _ => Err(DecodeError::BadRange {
                section: rec.section.name(),
                offset: rec.offset + at,
                target: target.name(),
                start,
                count,
                expected_start,
                available,
            }),
        }
    }

    /// Reads the `(offset, length)` string reference at `at` in `rec`.
    fn string(&mut self, rec: &Rec<'_>, at: usize) -> Result<&'a str> {
        let start = rec.u32(at)?;
        let len = rec.u32(at + 4)?;
        let field = rec.offset + at;
        let (table, table_len) = self
            .sections
            .get(Section::Strings.index())
            .copied()
            .unwrap_or((0, 0));
        let oob = DecodeError::StringOutOfBounds {
            section: rec.section.name(),
            offset: field,
            start,
            len,
            table_len,
        };
        let end = (start as usize)
            .checked_add(len as usize)
            .ok_or(oob.clone())?;
        if end > table_len {
            return Err(oob);
        }
        self.string_refs += 1;
        self.string_bytes = self.string_bytes.saturating_add(len as usize);
        let budget =
            table_len.saturating_add(self.string_refs.saturating_mul(MAX_SHARED_STRING_LEN));
        if self.string_bytes > budget {
            return Err(DecodeError::TooLarge {
                section: rec.section.name(),
                offset: field,
            });
        }
        let raw = self
            .bytes
            .get(table + start as usize..table + end)
            .ok_or(oob)?;
        core::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8 {
            section: rec.section.name(),
            offset: field,
        })
    }

    /// An owned copy of a validated string, when building.
    fn own(&self, s: &str) -> String {
        if self.build {
            String::from(s)
        } else {
            String::new()
        }
    }

    /// Room for `n` items, when building (validating allocates nothing).
    fn room<T>(&self, n: usize) -> Vec<T> {
        if self.build {
            Vec::with_capacity(n)
        } else {
            Vec::new()
        }
    }

    /// Keeps a decoded item, when building.
    fn keep<T>(&self, out: &mut Vec<T>, item: T) {
        if self.build {
            out.push(item);
        }
    }

    /// A string reference that must be empty (`0, 0`) because the record's
    /// kind has no string.
    fn no_string(&self, rec: &Rec<'_>, at: usize) -> Result<()> {
        rec.zero(at, at + 8, "unused string reference is not zero")
    }

    fn names(&mut self, rec: &Rec<'_>, at: usize) -> Result<Vec<String>> {
        let range = self.range(rec, at, Section::Names)?;
        let mut out = self.room(range.len());
        for i in range {
            let r = self.record(Section::Names, i)?;
            let name = self.string(&r, 0)?;
            let name = self.own(name);
            self.keep(&mut out, name);
        }
        Ok(out)
    }

    fn mesh(&mut self) -> Result<MeshSettings> {
        let r = self.record(Section::Mesh, 0)?;
        let trust_domain = self.string(&r, 0)?.into();
        let trust_domain_aliases = self.names(&r, 8)?;
        let root_namespace = self.string(&r, 16)?.into();
        let header_name = self.string(&r, 24)?;
        if !is_header_name(header_name) {
            return Err(
                r.invalid("the identity header name is not a non-empty lower-case header name")
            );
        }
        let value = match r.u8(32)? {
            0 => IdentityValue::Spiffe,
            1 => IdentityValue::Principal,
            2 => IdentityValue::Off,
            v => return Err(r.bad_tag("identity header value", u32::from(v))),
        };
        let spoofed_identity = match r.u8(33)? {
            0 => SpoofPolicy::Strip,
            1 => SpoofPolicy::Deny,
            v => return Err(r.bad_tag("spoofed identity policy", u32::from(v))),
        };
        let path_policy = match r.u8(34)? {
            0 => PathPolicy::Strict,
            1 => PathPolicy::Istio,
            v => return Err(r.bad_tag("path policy", u32::from(v))),
        };
        r.zero(35, 36, "reserved byte is not zero")?;
        let deny_status = r.u16(36)?;
        if !(100..=599).contains(&deny_status) {
            return Err(r.bad_tag("deny status", u32::from(deny_status)));
        }
        r.zero(38, 40, "reserved bytes are not zero")?;
        let trusted_forwarders = self.names(&r, 40)?;
        let deny_body = self.string(&r, 48)?.into();
        r.zero(56, 64, "reserved bytes are not zero")?;
        Ok(MeshSettings {
            trust_domain,
            trust_domain_aliases,
            root_namespace,
            identity_header: IdentityHeader {
                name: header_name.into(),
                value,
            },
            trusted_forwarders,
            spoofed_identity,
            path_policy,
            deny_status,
            deny_body,
        })
    }

    /// Every policy, or with a workload only those that apply to it (the
    /// others are validated, not built).
    fn policies(
        &mut self,
        workload: Option<&Workload<'_>>,
        root_namespace: &str,
    ) -> Result<Vec<Policy>> {
        let n = self.count(Section::Policies);
        if let Some(c) = self.cursors.get_mut(Section::Policies.index()) {
            *c = n;
        }
        let mut out = Vec::with_capacity(if workload.is_some() { 0 } else { n });
        for i in 0..n {
            if let Some(policy) = self.policy(i, workload, root_namespace)? {
                out.push(policy);
            }
        }
        Ok(out)
    }

    fn policy(
        &mut self,
        i: usize,
        workload: Option<&Workload<'_>>,
        root_namespace: &str,
    ) -> Result<Option<Policy>> {
        let r = self.record(Section::Policies, i)?;
        let name = self.string(&r, 0)?;
        let namespace = self.string(&r, 8)?;
        let action = match r.u8(16)? {
            0 => Action::Allow,
            1 => Action::Deny,
            2 => Action::Audit,
            v => return Err(r.bad_tag("action", u32::from(v))),
        };
        let dry_run = r.flag(17, "dry-run flag")?;
        r.zero(18, 20, "reserved bytes are not zero")?;
        let sel = self.range(&r, 20, Section::Selectors)?;
        let mut selector: Vec<(&str, &str)> = Vec::with_capacity(sel.len());
        for j in sel {
            let s = self.record(Section::Selectors, j)?;
            let k = self.string(&s, 0)?;
            let v = self.string(&s, 8)?;
            selector.push((k, v));
        }
        let wanted = workload
            .is_none_or(|w| applies_to(namespace, selector.iter().copied(), w, root_namespace));
        self.build = wanted;
        let rules_range = self.range(&r, 28, Section::Rules);
        let rules = rules_range.and_then(|range| {
            let mut rules = self.room(range.len());
            for j in range {
                let rule = self.rule(j)?;
                self.keep(&mut rules, rule);
            }
            Ok(rules)
        });
        self.build = true;
        let rules = rules?;
        if !wanted {
            return Ok(None);
        }
        Ok(Some(Policy {
            name: name.into(),
            namespace: namespace.into(),
            action,
            dry_run,
            selector: selector
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            rules,
        }))
    }

    fn rule(&mut self, i: usize) -> Result<Rule> {
        let r = self.record(Section::Rules, i)?;
        let from = self.conjunctions(&r, 0)?;
        let to = self.conjunctions(&r, 8)?;
        let when = self.clauses(&r, 16)?;
        Ok(Rule { from, to, when })
    }

    fn conjunctions(&mut self, r: &Rec<'_>, at: usize) -> Result<Vec<Conjunction>> {
        let range = self.range(r, at, Section::Conjunctions)?;
        // Take the ranges of all the records first (they are contiguous),
        // then decode their clauses in order.
        let mut out = self.room(range.len());
        for j in range {
            let c = self.record(Section::Conjunctions, j)?;
            let clauses = self.clauses(&c, 0)?;
            self.keep(&mut out, clauses);
        }
        Ok(out)
    }

    fn clauses(&mut self, r: &Rec<'_>, at: usize) -> Result<Conjunction> {
        let range = self.range(r, at, Section::Clauses)?;
        let mut out = self.room(range.len());
        for j in range {
            let clause = self.clause(j)?;
            self.keep(&mut out, clause);
        }
        Ok(out)
    }

    fn clause(&mut self, i: usize) -> Result<Clause> {
        let r = self.record(Section::Clauses, i)?;
        let attribute = match r.u8(0)? {
            tag::PEER_URI => Attribute::PeerUri,
            tag::SOURCE_IP => Attribute::SourceIp,
            tag::REMOTE_IP => Attribute::RemoteIp,
            tag::DESTINATION_IP => Attribute::DestinationIp,
            tag::DESTINATION_PORT => Attribute::DestinationPort,
            tag::SNI => Attribute::Sni,
            tag::HOST => Attribute::Host,
            tag::METHOD => Attribute::Method,
            tag::PATH => Attribute::Path,
            tag::HEADER => Attribute::Header(String::new()),
            tag::REQUEST_AUTH => Attribute::RequestAuth(String::new()),
            v => return Err(r.bad_tag("attribute", u32::from(v))),
        };
        let negated = r.flag(1, "negated flag")?;
        r.zero(2, 4, "reserved bytes are not zero")?;
        let attribute = match attribute {
            Attribute::Header(_) => {
                let name = self.string(&r, 4)?;
                if !is_header_name(name) {
                    return Err(r.invalid("header name is not a non-empty lower-case header name"));
                }
                Attribute::Header(self.own(name))
            }
            Attribute::RequestAuth(_) => {
                let key = self.string(&r, 4)?;
                if key.is_empty() || key.chars().any(char::is_control) {
                    return Err(r.invalid("request-auth key is empty or has control characters"));
                }
                Attribute::RequestAuth(self.own(key))
            }
            other => {
                self.no_string(&r, 4)?;
                other
            }
        };
        let kind = attribute_kind(&attribute);
        let range = self.range(&r, 12, Section::Values)?;
        let mut values = self.room(range.len());
        for j in range {
            let value = self.value(j, kind)?;
            self.keep(&mut values, value);
        }
        Ok(Clause {
            attribute,
            negated,
            values,
        })
    }

    fn value(&mut self, i: usize, kind: Kind) -> Result<ValueMatch> {
        let r = self.record(Section::Values, i)?;
        let t = r.u8(0)?;
        let flags = r.u8(1)?;
        let small = r.u16(2)?;
        let is_str = matches!(
            t,
            tag::V_EXACT
                | tag::V_PREFIX
                | tag::V_SUFFIX
                | tag::V_CONTAINS
                | tag::V_PRESENT
                | tag::V_PATTERN
        );
        if flags & !tag::FLAG_IGNORE_CASE != 0 || (!is_str && flags != 0) {
            return Err(r.bad_tag("value flags", u32::from(flags)));
        }
        if t != tag::V_CIDR && t != tag::V_PORT && small != 0 {
            return Err(r.invalid("reserved bytes are not zero"));
        }
        let value_kind = match t {
            tag::V_CIDR => Kind::Ip,
            tag::V_PORT => Kind::Port,
            _ => Kind::Text,
        };
        if t <= tag::V_PATH_TEMPLATE && value_kind != kind {
            return Err(r.invalid("the value's kind does not fit its clause's attribute"));
        }
        let ignore_case = flags & tag::FLAG_IGNORE_CASE != 0;
        let s = |kind| ValueMatch::Str(StrMatch { kind, ignore_case });
        let value = match t {
            tag::V_EXACT | tag::V_PREFIX | tag::V_SUFFIX | tag::V_CONTAINS => {
                let text = self.string(&r, 4)?;
                let text = self.own(text);
                r.zero(12, 20, "unused payload is not zero")?;
                s(match t {
                    tag::V_EXACT => StrMatchKind::Exact(text),
                    tag::V_PREFIX => StrMatchKind::Prefix(text),
                    tag::V_SUFFIX => StrMatchKind::Suffix(text),
                    _ => StrMatchKind::Contains(text),
                })
            }
            tag::V_PRESENT => {
                r.zero(4, 20, "unused payload is not zero")?;
                s(StrMatchKind::Present)
            }
            tag::V_PATTERN => {
                r.zero(12, 20, "unused payload is not zero")?;
                let range = self.range(&r, 4, Section::Pieces)?;
                let mut pieces = self.room(range.len());
                let mut prev_wild = false;
                for j in range {
                    let piece = self.piece(j)?;
                    let wild = !matches!(piece, PatternPiece::Literal(_));
                    if wild && prev_wild {
                        return Err(r.invalid("pattern has two wildcards in a row"));
                    }
                    prev_wild = wild;
                    self.keep(&mut pieces, piece);
                }
                s(StrMatchKind::Pattern(pieces))
            }
            tag::V_SERVICE_ACCOUNT => {
                let namespace = self.string(&r, 4)?;
                let name = self.string(&r, 12)?;
                let ok = |s: &str| !s.is_empty() && !s.contains('\n');
                if !ok(namespace) || !ok(name) {
                    return Err(
                        r.invalid("service account namespace or name is empty or has a newline")
                    );
                }
                ValueMatch::ServiceAccount {
                    namespace: self.own(namespace),
                    name: self.own(name),
                }
            }
            tag::V_CIDR => {
                if small > 128 {
                    return Err(r.invalid("CIDR prefix length is above 128"));
                }
                let mut address = [0u8; 16];
                address.copy_from_slice(r.bytes.get(4..20).ok_or_else(|| r.short())?);
                ValueMatch::Cidr(Cidr {
                    address,
                    prefix_len: small as u8,
                })
            }
            tag::V_PORT => {
                r.zero(4, 20, "unused payload is not zero")?;
                ValueMatch::Port(small)
            }
            tag::V_PATH_TEMPLATE => {
                let t = self.string(&r, 4)?;
                r.zero(12, 20, "unused payload is not zero")?;
                if let Err(reason) = check_template(t) {
                    return Err(r.invalid(reason));
                }
                ValueMatch::PathTemplate(self.own(t))
            }
            v => return Err(r.bad_tag("value kind", u32::from(v))),
        };
        Ok(value)
    }

    fn piece(&mut self, i: usize) -> Result<PatternPiece> {
        let r = self.record(Section::Pieces, i)?;
        let t = r.u8(0)?;
        r.zero(1, 4, "reserved bytes are not zero")?;
        let piece = match t {
            tag::P_LITERAL => {
                let lit = self.string(&r, 4)?;
                if lit.is_empty() {
                    return Err(r.invalid("pattern literal is empty"));
                }
                if lit.contains('\n') {
                    return Err(r.invalid("pattern literal contains a newline"));
                }
                PatternPiece::Literal(self.own(lit))
            }
            tag::P_ANY_RUN => PatternPiece::AnyRun,
            tag::P_ANY_NON_EMPTY_RUN => PatternPiece::AnyNonEmptyRun,
            tag::P_SEGMENT_RUN => PatternPiece::SegmentRun,
            v => return Err(r.bad_tag("pattern piece kind", u32::from(v))),
        };
        if t != tag::P_LITERAL {
            self.no_string(&r, 4)?;
        }
        Ok(piece)
    }
}

/// What kind of value an attribute holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Ip,
    Port,
}

fn attribute_kind(a: &Attribute) -> Kind {
    match a {
        Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => Kind::Ip,
        Attribute::DestinationPort => Kind::Port,
        _ => Kind::Text,
    }
}

/// The most operators (`*`, `**`) a URI template may have, as in Envoy.
const MAX_TEMPLATE_OPERATORS: usize = 5;

/// Envoy's URI template rules that bound the matcher's work: operators `*`
/// and `**` only (no `***`), at most [`MAX_TEMPLATE_OPERATORS`] of them, and
/// `**` only as the last one.
fn check_template(t: &str) -> core::result::Result<(), &'static str> {
    let mut operators = 0usize;
    let mut seen_rest = false;
    for run in t.split(|c| c != '*').filter(|r| !r.is_empty()) {
        if seen_rest {
            return Err("URI template has an operator after `**`");
        }
        match run.len() {
            1 => {}
            2 => seen_rest = true,
            _ => return Err("URI template has `***`"),
        }
        operators += 1;
    }
    if operators > MAX_TEMPLATE_OPERATORS {
        return Err("URI template has more than 5 operators");
    }
    Ok(())
}

/// A lower-case header name: not empty, no ASCII upper-case letter (lookups
/// fold ASCII case, so an upper-case name is a compiler bug) and no control
/// character. A leading `:` names a pseudo-header.
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| !b.is_ascii_uppercase() && !b.is_ascii_control())
}
