//! A deliberately naive reference interpreter of the IR, used only by tests.
//!
//! It decides a request the slow, obvious way: it scans every policy of the
//! ruleset linearly (no workload selection cache, no caller-namespace index),
//! reads attributes directly, and matches wildcard patterns, service accounts
//! and URI templates by trying every way to split the value (backtracking),
//! rather than with the greedy algorithms of [`crate::matching`]. Tests
//! compare it with [`crate::eval`]: where the two disagree, one has a bug.
//!
//! It shares only data types (the IR, [`Request`], [`Workload`], [`Cause`],
//! [`DryRun`], [`RuleRef`]) and two pieces of non-matching semantics with the
//! evaluator: [`identity::sanitize`] (who may send the identity header) and
//! the [`path`] functions (query stripping and the `strict` path check).

// Test-only code, never built into the filter: a panic here is a failed test.
#![allow(clippy::indexing_slicing)]

use alloc::string::String;
use alloc::vec::Vec;

use crate::eval::{Cause, Decision, DryRun, RuleRef, Workload};
use crate::identity::{self, SanitizedIdentity};
use crate::ir::{
    Action, Attribute, Cidr, Clause, IdentityValue, PathPolicy, PatternPiece, Policy, Rule,
    Ruleset, SpoofPolicy, StrMatch, StrMatchKind, ValueMatch,
};
use crate::path;
use crate::request::Request;

/// What the reference interpreter decided: the parts of [`Decision`] that
/// the evaluator must reproduce exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceDecision {
    pub allowed: bool,
    pub cause: Cause,
    pub audit: Option<RuleRef>,
    pub dry_run: DryRun,
}

impl ReferenceDecision {
    /// Whether the evaluator's decision says the same thing.
    pub fn agrees_with(&self, d: &Decision<'_>) -> bool {
        self.allowed == d.allowed
            && self.cause == d.cause
            && self.audit == d.audit
            && self.dry_run == d.dry_run
    }
}

/// The policy kinds a workload's policies fall into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deny,
    Allow,
    Audit,
    DryRunDeny,
    DryRunAllow,
}

fn kind_of(p: &Policy) -> Kind {
    match (p.action, p.dry_run) {
        (Action::Audit, _) => Kind::Audit,
        (Action::Deny, false) => Kind::Deny,
        (Action::Allow, false) => Kind::Allow,
        (Action::Deny, true) => Kind::DryRunDeny,
        (Action::Allow, true) => Kind::DryRunAllow,
    }
}

/// Decides one request by scanning every policy.
pub fn decide(ruleset: &Ruleset, workload: &Workload<'_>, req: &Request<'_>) -> ReferenceDecision {
    let mesh = &ruleset.mesh;
    let incoming = match mesh.identity_header.value {
        IdentityValue::Off => None,
        _ => req.headers.first_with_count(&mesh.identity_header.name),
    };
    let id = identity::sanitize(mesh, req.peer_uri, incoming);
    let r = Reader {
        ruleset,
        req,
        identity: id,
    };
    let mut out = ReferenceDecision {
        allowed: false,
        cause: Cause::NoAllowMatched,
        audit: None,
        dry_run: DryRun::default(),
    };
    if mesh.path_policy == PathPolicy::Strict {
        if let Err(p) = path::check_strict(req.path) {
            out.cause = Cause::PathRefused(p);
            return out;
        }
    }
    out.audit = r.first_match(workload, Kind::Audit);
    if id.stripped_incoming && mesh.spoofed_identity == SpoofPolicy::Deny {
        out.cause = Cause::SpoofedIdentity;
        return out;
    }
    out.dry_run.deny = r.first_match(workload, Kind::DryRunDeny);
    if let Some(rule) = r.first_match(workload, Kind::Deny) {
        out.cause = Cause::DeniedBy(rule);
        return out;
    }
    if r.any_applies(workload, Kind::DryRunAllow) {
        out.dry_run.allow = Some(r.first_match(workload, Kind::DryRunAllow));
    }
    if !r.any_applies(workload, Kind::Allow) {
        out.allowed = true;
        out.cause = Cause::NoAllowPolicy;
        return out;
    }
    if let Some(rule) = r.first_match(workload, Kind::Allow) {
        out.allowed = true;
        out.cause = Cause::AllowedBy(rule);
    }
    out
}

struct Reader<'a, 'q> {
    ruleset: &'a Ruleset,
    req: &'a Request<'q>,
    identity: SanitizedIdentity<'q>,
}

/// Whether the policy applies to the workload: same namespace or the root
/// namespace, and every selector label present with the same value.
fn selects(p: &Policy, w: &Workload<'_>, root: &str) -> bool {
    if p.namespace != w.namespace && p.namespace != root {
        return false;
    }
    for (k, v) in &p.selector {
        let mut found = false;
        for (lk, lv) in w.labels {
            if lk == k && lv == v {
                found = true;
            }
        }
        if !found {
            return false;
        }
    }
    true
}

impl Reader<'_, '_> {
    fn any_applies(&self, w: &Workload<'_>, kind: Kind) -> bool {
        let root = &self.ruleset.mesh.root_namespace;
        self.ruleset
            .policies
            .iter()
            .any(|p| kind_of(p) == kind && selects(p, w, root))
    }

    fn first_match(&self, w: &Workload<'_>, kind: Kind) -> Option<RuleRef> {
        let root = &self.ruleset.mesh.root_namespace;
        for (pi, p) in self.ruleset.policies.iter().enumerate() {
            if kind_of(p) != kind || !selects(p, w, root) {
                continue;
            }
            for (ri, rule) in p.rules.iter().enumerate() {
                if self.rule(rule) {
                    return Some(RuleRef {
                        policy: pi as u32,
                        rule: ri as u32,
                    });
                }
            }
        }
        None
    }

    fn rule(&self, rule: &Rule) -> bool {
        let from = rule.from.is_empty() || rule.from.iter().any(|c| self.all(c));
        let to = rule.to.is_empty() || rule.to.iter().any(|c| self.all(c));
        from && to && self.all(&rule.when)
    }

    fn all(&self, clauses: &[Clause]) -> bool {
        clauses.iter().all(|c| self.clause(c))
    }

    fn clause(&self, c: &Clause) -> bool {
        let mut any = false;
        if let Some(actual) = self.attribute(&c.attribute) {
            for v in &c.values {
                if value(v, &actual) {
                    any = true;
                }
            }
        }
        if c.negated {
            !any
        } else {
            any
        }
    }

    fn attribute(&self, a: &Attribute) -> Option<Actual> {
        let req = self.req;
        let text = |s: &str| Some(Actual::Text(String::from(s)));
        match a {
            Attribute::PeerUri => req.peer_uri.and_then(text),
            Attribute::SourceIp => req.source_ip.map(Actual::Ip),
            Attribute::RemoteIp => match req.remote_ip {
                Some(ip) => Some(Actual::Ip(ip)),
                None => req.source_ip.map(Actual::Ip),
            },
            Attribute::DestinationIp => req.destination_ip.map(Actual::Ip),
            Attribute::DestinationPort => Some(Actual::Port(req.destination_port)),
            Attribute::Sni => req.sni.and_then(text),
            Attribute::Host => text(req.host),
            Attribute::Method => text(req.method),
            Attribute::Path => text(path::path_for_matching(req.path)),
            Attribute::Header(name) => {
                let mesh = &self.ruleset.mesh;
                if name == ":authority" || name == "host" {
                    text(req.host)
                } else if name == ":method" {
                    text(req.method)
                } else if name == ":path" {
                    text(req.path)
                } else if *name == mesh.identity_header.name
                    && mesh.identity_header.value != IdentityValue::Off
                {
                    self.identity.value.and_then(text)
                } else {
                    req.headers
                        .get(name)
                        .map(|v| Actual::Text(String::from(&*v)))
                }
            }
            Attribute::RequestAuth(_) => None,
        }
    }
}

enum Actual {
    Text(String),
    Ip([u8; 16]),
    Port(u16),
}

fn value(v: &ValueMatch, actual: &Actual) -> bool {
    match (v, actual) {
        (ValueMatch::Str(m), Actual::Text(s)) => string_matches(m, s),
        (ValueMatch::ServiceAccount { namespace, name }, Actual::Text(s)) => {
            service_account(s, namespace, name)
        }
        (ValueMatch::PathTemplate(t), Actual::Text(s)) => template(t.as_bytes(), s.as_bytes()),
        (ValueMatch::Cidr(c), Actual::Ip(ip)) => cidr(c, ip),
        (ValueMatch::Port(p), Actual::Port(q)) => p == q,
        _ => false,
    }
}

fn fold(s: &str, ci: bool) -> String {
    if ci {
        s.to_ascii_lowercase()
    } else {
        String::from(s)
    }
}

fn string_matches(m: &StrMatch, value: &str) -> bool {
    let ci = m.ignore_case;
    let v = fold(value, ci);
    match &m.kind {
        StrMatchKind::Exact(s) => v == fold(s, ci),
        StrMatchKind::Prefix(s) => v.starts_with(fold(s, ci).as_str()),
        StrMatchKind::Suffix(s) => v.ends_with(fold(s, ci).as_str()),
        StrMatchKind::Contains(s) => v.contains(fold(s, ci).as_str()),
        StrMatchKind::Present => true,
        StrMatchKind::Pattern(pieces) => pattern(pieces, value.as_bytes(), ci),
    }
}

/// Backtracking: every wildcard tries every length it may take.
pub fn pattern(pieces: &[PatternPiece], s: &[u8], ci: bool) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return s.is_empty();
    };
    match first {
        PatternPiece::Literal(lit) => {
            let lit = lit.as_bytes();
            s.len() >= lit.len()
                && (if ci {
                    s[..lit.len()].eq_ignore_ascii_case(lit)
                } else {
                    &s[..lit.len()] == lit
                })
                && pattern(rest, &s[lit.len()..], ci)
        }
        wild => {
            let min = usize::from(*wild == PatternPiece::AnyNonEmptyRun);
            for k in min..=s.len() {
                let taken = &s[..k];
                if taken.contains(&b'\n') {
                    break;
                }
                if *wild == PatternPiece::SegmentRun && taken.contains(&b'/') {
                    break;
                }
                if pattern(rest, &s[k..], ci) {
                    return true;
                }
            }
            false
        }
    }
}

/// Istio's `spiffe://.+/ns/NS/(.+/|)sa/SA(/.+)?`, written out as the four
/// patterns its optional parts make.
pub fn service_account(uri: &str, ns: &str, sa: &str) -> bool {
    use PatternPiece::{AnyNonEmptyRun as Dot, Literal};
    let l = |s: String| Literal(s);
    let mut shapes: Vec<Vec<PatternPiece>> = Vec::new();
    for middle in [false, true] {
        for tail in [false, true] {
            let mut p = alloc::vec![l("spiffe://".into()), Dot];
            if middle {
                p.push(l(alloc::format!("/ns/{ns}/")));
                p.push(Dot);
                p.push(l(alloc::format!("/sa/{sa}")));
            } else {
                p.push(l(alloc::format!("/ns/{ns}/sa/{sa}")));
            }
            if tail {
                p.push(l("/".into()));
                p.push(Dot);
            }
            shapes.push(p);
        }
    }
    shapes.iter().any(|p| pattern(p, uri.as_bytes(), false))
}

fn bit(a: &[u8; 16], i: usize) -> bool {
    a[i / 8] & (0x80 >> (i % 8)) != 0
}

pub fn cidr(c: &Cidr, ip: &[u8; 16]) -> bool {
    (0..usize::from(c.prefix_len).min(128)).all(|i| bit(&c.address, i) == bit(ip, i))
}

/// A byte Envoy's URI templates let `*` and `**` consume (RFC 3986 `pchar`
/// without `*`): letters, digits and `-._~%!$&'()+,;:@=`.
fn pchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~' | b'%' | b'!' | b'$' | b'&' | b'\''
        | b'(' | b')' | b'+' | b',' | b';' | b':' | b'@' | b'=')
}

/// Envoy URI template: `**` the rest (pchars and `/`, possibly empty), `*` one
/// non-empty run of pchars, anything else itself. Tries every split.
pub fn template(t: &[u8], p: &[u8]) -> bool {
    if let Some(rest) = t.strip_prefix(b"**") {
        for k in 0..=p.len() {
            if !p[..k].iter().all(|&b| b == b'/' || pchar(b)) {
                break;
            }
            if template(rest, &p[k..]) {
                return true;
            }
        }
        return false;
    }
    if let Some(rest) = t.strip_prefix(b"*") {
        for k in 1..=p.len() {
            if !p[..k].iter().all(|&b| pchar(b)) {
                break;
            }
            if template(rest, &p[k..]) {
                return true;
            }
        }
        return false;
    }
    match (t.split_first(), p.split_first()) {
        (None, _) => p.is_empty(),
        (Some((c, trest)), Some((d, prest))) => c == d && template(trest, prest),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::PatternPiece::*;
    use alloc::string::ToString;
    use alloc::vec;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn naive_patterns() {
        let p = vec![AnyRun, Literal("/ns/foo/".to_string()), AnyRun];
        assert!(pattern(&p, b"spiffe://td/ns/foo/sa/x", false));
        assert!(!pattern(&p, b"spiffe://td/ns/foo/sa/x\n", false));
        let p = vec![
            Literal("a".to_string()),
            SegmentRun,
            Literal("/".to_string()),
        ];
        assert!(pattern(&p, b"abc/", false));
        assert!(!pattern(&p, b"ab/c/", false));
        assert!(pattern(&[AnyNonEmptyRun], b"x", false));
        assert!(!pattern(&[AnyNonEmptyRun], b"", false));
        assert!(pattern(&[], b"", false));
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn naive_service_accounts() {
        assert!(service_account("spiffe://td/ns/a/sa/b", "a", "b"));
        assert!(service_account("spiffe://td/ns/a/x/y/sa/b/z", "a", "b"));
        assert!(!service_account("spiffe://td/ns/a/sa/b/", "a", "b"));
        assert!(!service_account("spiffe:///ns/a/sa/b", "a", "b"));
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn naive_templates_and_cidrs() {
        assert!(template(b"/a/*/c", b"/a/b/c"));
        assert!(!template(b"/a/*/c", b"/a//c"));
        assert!(template(b"/a/**", b"/a/"));
        assert!(template(b"/**/x", b"/a/b/x"));
        let c = Cidr {
            address: [0xff; 16],
            prefix_len: 9,
        };
        let mut ip = [0u8; 16];
        ip[0] = 0xff;
        ip[1] = 0x80;
        assert!(cidr(&c, &ip));
        ip[1] = 0x40;
        assert!(!cidr(&c, &ip));
    }
}
