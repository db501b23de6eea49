//! The encoder. It writes records depth first, so that every range is the next
//! run of records of its section (the order the decoder insists on).

use alloc::vec::Vec;

use hashbrown::HashMap;

use super::{
    checksum, tag, Section, ALIGNMENT, DIRECTORY_ENTRY_LEN, ENDIANNESS_MARKER, HEADER_LEN, LABEL,
    MAX_SHARED_STRING_LEN, VERSION,
};
use crate::ir::{
    Action, Attribute, Clause, Conjunction, IdentityValue, PathPolicy, PatternPiece, Policy, Rule,
    Ruleset, SpoofPolicy, StrMatchKind, ValueMatch,
};

/// Encodes a ruleset.
///
/// The encoder trusts its input to be a valid IR (as the compiler produces
/// it); it never panics, but a ruleset the decoder would refuse (an upper-case
/// header name, two wildcards in a row, a section beyond 4 GiB) encodes to
/// bytes that [`from_bytes`](super::from_bytes) refuses.
pub fn to_bytes(ruleset: &Ruleset) -> Vec<u8> {
    let mut enc = Encoder::default();
    enc.mesh(ruleset);
    for policy in &ruleset.policies {
        enc.policy_record(policy);
    }
    for policy in &ruleset.policies {
        enc.policy_children(policy);
    }
    enc.finish()
}

/// A length or index as the format stores it. Anything past `u32::MAX` is
/// stored as `u32::MAX`, which no valid ruleset holds, so the decoder refuses it.
fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[derive(Default)]
struct Encoder<'a> {
    sections: [Vec<u8>; 10],
    /// Never written: what [`Encoder::out`] hands back for a section index
    /// that cannot occur.
    spare: Vec<u8>,
    interned: HashMap<&'a str, (u32, u32)>,
    /// Selector and rule records promised to the policies written so far.
    pending_selectors: u32,
    pending_rules: u32,
}

impl<'a> Encoder<'a> {
    fn out(&mut self, section: Section) -> &mut Vec<u8> {
        // `Section as usize` is always below the array's length.
        match self.sections.get_mut(section.index()) {
            Some(v) => v,
            None => &mut self.spare,
        }
    }

    fn count(&self, section: Section) -> u32 {
        let len = self.sections.get(section.index()).map_or(0, Vec::len);
        u32_of(len / section.record_size())
    }

    /// Adds a string to the table (once, if short) and returns its reference.
    fn string(&mut self, s: &'a str) -> [u8; 8] {
        let (offset, len) = match self.interned.get(s) {
            Some(&r) => r,
            None => {
                let table = self.out(Section::Strings);
                let r = (u32_of(table.len()), u32_of(s.len()));
                table.extend_from_slice(s.as_bytes());
                if s.len() <= MAX_SHARED_STRING_LEN {
                    self.interned.insert(s, r);
                }
                r
            }
        };
        pair(offset, len)
    }

    fn mesh(&mut self, ruleset: &'a Ruleset) {
        let m = &ruleset.mesh;
        let mut rec = Vec::with_capacity(Section::Mesh.record_size());
        rec.extend_from_slice(&self.string(&m.trust_domain));
        let aliases = self.names(&m.trust_domain_aliases);
        rec.extend_from_slice(&aliases);
        rec.extend_from_slice(&self.string(&m.root_namespace));
        rec.extend_from_slice(&self.string(&m.identity_header.name));
        rec.push(match m.identity_header.value {
            IdentityValue::Spiffe => 0,
            IdentityValue::Principal => 1,
            IdentityValue::Off => 2,
        });
        rec.push(match m.spoofed_identity {
            SpoofPolicy::Strip => 0,
            SpoofPolicy::Deny => 1,
        });
        rec.push(match m.path_policy {
            PathPolicy::Strict => 0,
            PathPolicy::Istio => 1,
        });
        rec.push(0);
        rec.extend_from_slice(&m.deny_status.to_le_bytes());
        rec.extend_from_slice(&[0, 0]);
        let forwarders = self.names(&m.trusted_forwarders);
        rec.extend_from_slice(&forwarders);
        rec.extend_from_slice(&self.string(&m.deny_body));
        rec.extend_from_slice(&[0; 8]);
        self.out(Section::Mesh).extend_from_slice(&rec);
    }

    fn names(&mut self, names: &'a [alloc::string::String]) -> [u8; 8] {
        let start = self.count(Section::Names);
        for n in names {
            let r = self.string(n);
            self.out(Section::Names).extend_from_slice(&r);
        }
        pair(start, u32_of(names.len()))
    }

    /// The policy records, all together: their selector and rule ranges are
    /// known in advance because children are written in policy order.
    fn policy_record(&mut self, policy: &'a Policy) {
        let selectors_start = self.pending_selectors;
        let rules_start = self.pending_rules;
        self.pending_selectors = selectors_start.saturating_add(u32_of(policy.selector.len()));
        self.pending_rules = rules_start.saturating_add(u32_of(policy.rules.len()));
        let name = self.string(&policy.name);
        let namespace = self.string(&policy.namespace);
        let out = self.out(Section::Policies);
        out.extend_from_slice(&name);
        out.extend_from_slice(&namespace);
        out.push(match policy.action {
            Action::Allow => 0,
            Action::Deny => 1,
            Action::Audit => 2,
        });
        out.push(u8::from(policy.dry_run));
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&pair(selectors_start, u32_of(policy.selector.len())));
        out.extend_from_slice(&pair(rules_start, u32_of(policy.rules.len())));
    }

    fn policy_children(&mut self, policy: &'a Policy) {
        for (k, v) in &policy.selector {
            let k = self.string(k);
            let v = self.string(v);
            let out = self.out(Section::Selectors);
            out.extend_from_slice(&k);
            out.extend_from_slice(&v);
        }
        // Rule records of one policy are contiguous; each rule's children are
        // written right after its record is reserved.
        for rule in &policy.rules {
            self.rule(rule);
        }
    }

    fn rule(&mut self, rule: &'a Rule) {
        let from = self.conjunctions(&rule.from);
        let to = self.conjunctions(&rule.to);
        let when = self.clauses(&rule.when);
        let out = self.out(Section::Rules);
        out.extend_from_slice(&from);
        out.extend_from_slice(&to);
        out.extend_from_slice(&when);
    }

    /// Writes a list of conjunctions: first their records, contiguous, then
    /// the clauses of each in order.
    fn conjunctions(&mut self, list: &'a [Conjunction]) -> [u8; 8] {
        let start = self.count(Section::Conjunctions);
        let mut next_clause = self.count(Section::Clauses);
        for conj in list {
            let n = u32_of(conj.len());
            let r = pair(next_clause, n);
            self.out(Section::Conjunctions).extend_from_slice(&r);
            next_clause = next_clause.saturating_add(n);
        }
        for conj in list {
            self.clauses(conj);
        }
        pair(start, u32_of(list.len()))
    }

    /// Writes clause records, contiguous, then each one's values in order.
    fn clauses(&mut self, clauses: &'a [Clause]) -> [u8; 8] {
        let start = self.count(Section::Clauses);
        let mut next_value = self.count(Section::Values);
        for clause in clauses {
            let (attr, name) = match &clause.attribute {
                Attribute::PeerUri => (tag::PEER_URI, [0; 8]),
                Attribute::SourceIp => (tag::SOURCE_IP, [0; 8]),
                Attribute::RemoteIp => (tag::REMOTE_IP, [0; 8]),
                Attribute::DestinationIp => (tag::DESTINATION_IP, [0; 8]),
                Attribute::DestinationPort => (tag::DESTINATION_PORT, [0; 8]),
                Attribute::Sni => (tag::SNI, [0; 8]),
                Attribute::Host => (tag::HOST, [0; 8]),
                Attribute::Method => (tag::METHOD, [0; 8]),
                Attribute::Path => (tag::PATH, [0; 8]),
                Attribute::Header(h) => (tag::HEADER, self.string(h)),
                Attribute::RequestAuth(k) => (tag::REQUEST_AUTH, self.string(k)),
            };
            let n = u32_of(clause.values.len());
            let out = self.out(Section::Clauses);
            out.push(attr);
            out.push(u8::from(clause.negated));
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&name);
            out.extend_from_slice(&pair(next_value, n));
            next_value = next_value.saturating_add(n);
        }
        for clause in clauses {
            self.values(&clause.values);
        }
        pair(start, u32_of(clauses.len()))
    }

    /// Writes value records, contiguous, then each pattern's pieces in order.
    fn values(&mut self, values: &'a [ValueMatch]) {
        let mut next_piece = self.count(Section::Pieces);
        for value in values {
            let mut rec = [0u8; 20];
            let mut payload = [0u8; 16];
            let (t, flags, small): (u8, u8, u16) = match value {
                ValueMatch::Str(m) => {
                    let flags = if m.ignore_case {
                        tag::FLAG_IGNORE_CASE
                    } else {
                        0
                    };
                    let (t, s) = match &m.kind {
                        StrMatchKind::Exact(s) => (tag::V_EXACT, Some(s)),
                        StrMatchKind::Prefix(s) => (tag::V_PREFIX, Some(s)),
                        StrMatchKind::Suffix(s) => (tag::V_SUFFIX, Some(s)),
                        StrMatchKind::Contains(s) => (tag::V_CONTAINS, Some(s)),
                        StrMatchKind::Present => (tag::V_PRESENT, None),
                        StrMatchKind::Pattern(pieces) => {
                            let n = u32_of(pieces.len());
                            put(&mut payload, 0, &pair(next_piece, n));
                            next_piece = next_piece.saturating_add(n);
                            (tag::V_PATTERN, None)
                        }
                    };
                    if let Some(s) = s {
                        let r = self.string(s);
                        put(&mut payload, 0, &r);
                    }
                    (t, flags, 0)
                }
                ValueMatch::ServiceAccount { namespace, name } => {
                    let ns = self.string(namespace);
                    let n = self.string(name);
                    put(&mut payload, 0, &ns);
                    put(&mut payload, 8, &n);
                    (tag::V_SERVICE_ACCOUNT, 0, 0)
                }
                ValueMatch::Cidr(c) => {
                    payload = c.address;
                    (tag::V_CIDR, 0, u16::from(c.prefix_len))
                }
                ValueMatch::Port(p) => (tag::V_PORT, 0, *p),
                ValueMatch::PathTemplate(t) => {
                    let r = self.string(t);
                    put(&mut payload, 0, &r);
                    (tag::V_PATH_TEMPLATE, 0, 0)
                }
            };
            put(&mut rec, 0, &[t, flags]);
            put(&mut rec, 2, &small.to_le_bytes());
            put(&mut rec, 4, &payload);
            self.out(Section::Values).extend_from_slice(&rec);
        }
        for value in values {
            if let ValueMatch::Str(m) = value {
                if let StrMatchKind::Pattern(pieces) = &m.kind {
                    self.pieces(pieces);
                }
            }
        }
    }

    fn pieces(&mut self, pieces: &'a [PatternPiece]) {
        for piece in pieces {
            let (t, s) = match piece {
                PatternPiece::Literal(l) => (tag::P_LITERAL, self.string(l)),
                PatternPiece::AnyRun => (tag::P_ANY_RUN, [0; 8]),
                PatternPiece::AnyNonEmptyRun => (tag::P_ANY_NON_EMPTY_RUN, [0; 8]),
                PatternPiece::SegmentRun => (tag::P_SEGMENT_RUN, [0; 8]),
            };
            let out = self.out(Section::Pieces);
            out.extend_from_slice(&[t, 0, 0, 0]);
            out.extend_from_slice(&s);
        }
    }

    /// Lays the header, the directory and the sections out and seals them.
    fn finish(self) -> Vec<u8> {
        let dir_len = Section::ALL.len() * DIRECTORY_ENTRY_LEN;
        let mut offsets = [(0usize, 0usize); 10];
        let mut at = HEADER_LEN + dir_len;
        for (slot, sec) in offsets.iter_mut().zip(self.sections.iter()) {
            at = align_up(at);
            *slot = (at, sec.len());
            at = at.saturating_add(sec.len());
        }
        let total = align_up(at);
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&LABEL);
        out.extend_from_slice(&ENDIANNESS_MARKER.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&ALIGNMENT.to_le_bytes());
        out.extend_from_slice(&u32_of(total).to_le_bytes());
        out.extend_from_slice(&[0; 4]); // checksum, filled below
        out.extend_from_slice(&u32_of(Section::ALL.len()).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for &(offset, len) in &offsets {
            out.extend_from_slice(&pair(u32_of(offset), u32_of(len)));
        }
        for sec in &self.sections {
            out.resize(align_up(out.len()), 0);
            out.extend_from_slice(sec);
        }
        out.resize(total, 0);
        let sum = checksum(&out);
        if let Some(field) = out.get_mut(36..40) {
            field.copy_from_slice(&sum.to_le_bytes());
        }
        out
    }
}

fn align_up(n: usize) -> usize {
    let a = ALIGNMENT as usize;
    n.saturating_add(a - 1) / a * a
}

fn pair(a: u32, b: u32) -> [u8; 8] {
    let mut r = [0u8; 8];
    put(&mut r, 0, &a.to_le_bytes());
    put(&mut r, 4, &b.to_le_bytes());
    r
}

fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = dst.get_mut(at..at + src.len()) {
        d.copy_from_slice(src);
    }
}
