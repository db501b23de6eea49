//! The evaluator: the one place that decides a request.
//!
//! [`Ruleset::for_workload`] selects the policies that apply to one workload and
//! indexes their rules by the caller namespace they require, once. After that,
//! [`WorkloadPolicy::decide`] reads the caller's namespace out of its URI SAN,
//! checks only the rules that can match it (plus the rules that name no
//! namespace), and combines the outcomes as Istio does: CUSTOM is refused at
//! compile time, then DENY, then ALLOW; AUDIT marks; dry-run policies are
//! evaluated and reported, never enforced.

use alloc::borrow::Cow;
use alloc::vec::Vec;
use core::hash::{BuildHasher, Hasher};

use hashbrown::HashMap;

use crate::identity::{self, SanitizedIdentity};
use crate::ir::{
    Action, Attribute, Clause, Conjunction, MeshSettings, PathPolicy, Policy, Rule, Ruleset,
    SpoofPolicy, StrMatchKind, ValueMatch,
};
use crate::matching::{service_account_matches, template_matches};
use crate::path::{self, PathProblem};
use crate::request::Request;

/// A rule by position: `ruleset.policies[policy].rules[rule]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    pub policy: u32,
    pub rule: u32,
}

/// The workload whose sidecar enforces: its namespace and labels.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
}

/// Why a request was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A DENY rule matched.
    DeniedBy(RuleRef),
    /// An ALLOW rule matched.
    AllowedBy(RuleRef),
    /// No ALLOW policy applies to the workload: allowed by default.
    NoAllowPolicy,
    /// ALLOW policies apply and none matched.
    NoAllowMatched,
    /// The `strict` path policy refused the path before any rule was read.
    PathRefused(PathProblem),
    /// The caller sent an identity header it may not send, and the mesh denies that.
    SpoofedIdentity,
}

/// The shadow outcome of the dry-run policies, as Envoy's RBAC shadow rules
/// report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DryRun {
    /// A dry-run DENY rule that matched.
    pub deny: Option<RuleRef>,
    /// Dry-run ALLOW policies apply: `Some(Some(rule))` when one matched,
    /// `Some(None)` when none did (the request would be denied).
    pub allow: Option<Option<RuleRef>>,
}

impl DryRun {
    /// Whether the dry-run policies, if enforced, would deny this request.
    pub fn would_deny(&self) -> bool {
        self.deny.is_some() || self.allow == Some(None)
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    pub cause: Cause,
    /// The first AUDIT rule that matched: the request is marked for audit.
    pub audit: Option<RuleRef>,
    pub dry_run: DryRun,
    /// What happens to the identity header, and the value rules saw.
    pub identity: SanitizedIdentity<'a>,
}

impl Decision<'_> {
    /// The HTTP status of the local reply for a denied request.
    pub fn deny_status(&self, mesh: &MeshSettings) -> u16 {
        match self.cause {
            Cause::PathRefused(_) => 400,
            _ => mesh.deny_status,
        }
    }
}

/// A small, fast, deterministic hasher (FNV-1a) for namespace keys.
#[derive(Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

#[derive(Clone, Copy, Default)]
pub struct BuildKeyHasher;

impl BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher::default()
    }
}

/// The rules of one kind (enforced DENY, enforced ALLOW, AUDIT, dry-run DENY,
/// dry-run ALLOW) for one workload, indexed by required caller namespace.
#[derive(Debug, Default)]
struct RuleGroup<'r> {
    /// At least one policy of this kind applies (even one without rules).
    applies: bool,
    /// Rules that can only match callers whose SAN holds `/ns/<key>/`.
    by_namespace: HashMap<&'r str, Vec<RuleRef>, BuildKeyHasher>,
    /// Rules that must be checked for every caller, in order.
    always: Vec<RuleRef>,
}

/// The policies that apply to one workload, selected and indexed once.
#[derive(Debug)]
pub struct WorkloadPolicy<'r> {
    ruleset: &'r Ruleset,
    deny: RuleGroup<'r>,
    allow: RuleGroup<'r>,
    audit: RuleGroup<'r>,
    dry_run_deny: RuleGroup<'r>,
    dry_run_allow: RuleGroup<'r>,
    header_names: Vec<&'r str>,
}

impl Policy {
    /// Whether this policy applies to the workload's sidecar.
    pub fn applies_to(&self, workload: &Workload<'_>, root_namespace: &str) -> bool {
        let selector = self.selector.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        applies_to(&self.namespace, selector, workload, root_namespace)
    }
}

/// Whether a policy of `namespace` with `selector` applies to the workload's
/// sidecar: it is in the workload's namespace or the root namespace, and every
/// selector pair is among the workload's labels.
pub fn applies_to<'s>(
    namespace: &str,
    selector: impl IntoIterator<Item = (&'s str, &'s str)>,
    workload: &Workload<'_>,
    root_namespace: &str,
) -> bool {
    (namespace == workload.namespace || namespace == root_namespace)
        && selector
            .into_iter()
            .all(|(k, v)| workload.labels.iter().any(|&(lk, lv)| lk == k && lv == v))
}

impl Ruleset {
    /// Selects and indexes the policies that apply to `workload`.
    pub fn for_workload(&self, workload: &Workload<'_>) -> WorkloadPolicy<'_> {
        let mut wp = WorkloadPolicy {
            ruleset: self,
            deny: RuleGroup::default(),
            allow: RuleGroup::default(),
            audit: RuleGroup::default(),
            dry_run_deny: RuleGroup::default(),
            dry_run_allow: RuleGroup::default(),
            header_names: Vec::new(),
        };
        for (pi, policy) in self.policies.iter().enumerate() {
            if !policy.applies_to(workload, &self.mesh.root_namespace) {
                continue;
            }
            let group = match (policy.action, policy.dry_run) {
                (Action::Deny, false) => &mut wp.deny,
                (Action::Allow, false) => &mut wp.allow,
                (Action::Audit, _) => &mut wp.audit,
                (Action::Deny, true) => &mut wp.dry_run_deny,
                (Action::Allow, true) => &mut wp.dry_run_allow,
            };
            group.applies = true;
            for (ri, rule) in policy.rules.iter().enumerate() {
                let at = RuleRef {
                    policy: pi as u32,
                    rule: ri as u32,
                };
                match namespace_keys(rule) {
                    Some(keys) => {
                        for key in keys {
                            let list = group.by_namespace.entry(key).or_default();
                            if list.last() != Some(&at) {
                                list.push(at);
                            }
                        }
                    }
                    None => group.always.push(at),
                }
                for clause in rule.clauses() {
                    if let Attribute::Header(name) = &clause.attribute {
                        if !wp.header_names.contains(&name.as_str()) {
                            wp.header_names.push(name.as_str());
                        }
                    }
                }
            }
        }
        wp
    }
}

/// The namespaces a rule requires of its caller, when it requires one: every
/// way the rule can match needs the caller's URI SAN to contain `/ns/<key>/`
/// for one of the keys. `None` when the rule may match any caller.
fn namespace_keys(rule: &Rule) -> Option<Vec<&str>> {
    // A `when` clause binds every way of matching; else each `from` source must.
    if let Some(keys) = rule.when.iter().find_map(clause_keys) {
        return Some(keys);
    }
    if rule.from.is_empty() {
        return None;
    }
    let mut all = Vec::new();
    for source in &rule.from {
        all.extend(source.iter().find_map(clause_keys)?);
    }
    Some(all)
}

fn clause_keys(clause: &Clause) -> Option<Vec<&str>> {
    if clause.attribute != Attribute::PeerUri || clause.negated || clause.values.is_empty() {
        return None;
    }
    clause.values.iter().map(value_key).collect()
}

fn value_key(value: &ValueMatch) -> Option<&str> {
    match value {
        ValueMatch::ServiceAccount { namespace, .. } if !namespace.contains('/') => {
            Some(namespace.as_str())
        }
        ValueMatch::Str(m) if !m.ignore_case => match &m.kind {
            StrMatchKind::Exact(s) | StrMatchKind::Prefix(s) | StrMatchKind::Contains(s) => {
                first_namespace(s)
            }
            StrMatchKind::Pattern(pieces) => pieces.iter().find_map(|p| match p {
                crate::ir::PatternPiece::Literal(l) => first_namespace(l),
                _ => None,
            }),
            _ => None,
        },
        _ => None,
    }
}

/// The segment of the first `/ns/<segment>/` in `s`.
fn first_namespace(s: &str) -> Option<&str> {
    namespaces_in(s).next()
}

/// Every `<segment>` of `/ns/<segment>/` in `s`, overlapping ones included.
pub fn namespaces_in(s: &str) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut from = 0usize;
    core::iter::from_fn(move || loop {
        let i = from + crate::matching::find_bytes(bytes.get(from..)?, b"/ns/")?;
        let start = i + 4;
        from = i + 1;
        let seg_len = bytes.get(start..)?.iter().position(|&b| b == b'/')?;
        if seg_len > 0 {
            return s.get(start..start + seg_len);
        }
    })
}

impl<'r> WorkloadPolicy<'r> {
    pub fn ruleset(&self) -> &'r Ruleset {
        self.ruleset
    }

    /// The request headers the selected rules read (lower case), besides the
    /// identity header.
    pub fn header_names(&self) -> &[&'r str] {
        &self.header_names
    }

    /// Whether any policy applies at all (if not, every request is allowed).
    pub fn has_policies(&self) -> bool {
        self.deny.applies
            || self.allow.applies
            || self.audit.applies
            || self.dry_run_deny.applies
            || self.dry_run_allow.applies
    }

    /// Number of rules that must be checked for every caller, and the number
    /// of namespace keys in the index (for `inspect` and benches).
    pub fn index_stats(&self) -> (usize, usize) {
        let groups = [
            &self.deny,
            &self.allow,
            &self.audit,
            &self.dry_run_deny,
            &self.dry_run_allow,
        ];
        (
            groups.iter().map(|g| g.always.len()).sum(),
            groups.iter().map(|g| g.by_namespace.len()).sum(),
        )
    }

    /// Decides one request.
    pub fn decide<'q>(&self, req: &Request<'q>) -> Decision<'q> {
        let mesh = &self.ruleset.mesh;
        let incoming = if mesh.identity_header.value == crate::ir::IdentityValue::Off {
            None
        } else {
            req.headers.first_with_count(&mesh.identity_header.name)
        };
        let identity = identity::sanitize(mesh, req.peer_uri, incoming);
        let ctx = Context {
            req,
            mesh,
            identity: &identity,
        };
        let mut decision = Decision {
            allowed: false,
            cause: Cause::NoAllowMatched,
            audit: None,
            dry_run: DryRun::default(),
            identity,
        };
        // The path policy comes before any rule, AUDIT included.
        if mesh.path_policy == PathPolicy::Strict {
            if let Err(problem) = path::check_strict(req.path) {
                decision.cause = Cause::PathRefused(problem);
                return decision;
            }
        }
        decision.audit = self.first_match(&self.audit, &ctx);
        if identity.stripped_incoming && mesh.spoofed_identity == SpoofPolicy::Deny {
            decision.cause = Cause::SpoofedIdentity;
            return decision;
        }
        if self.dry_run_deny.applies {
            decision.dry_run.deny = self.first_match(&self.dry_run_deny, &ctx);
        }
        if let Some(rule) = self.first_match(&self.deny, &ctx) {
            decision.cause = Cause::DeniedBy(rule);
            return decision;
        }
        if self.dry_run_allow.applies {
            decision.dry_run.allow = Some(self.first_match(&self.dry_run_allow, &ctx));
        }
        if !self.allow.applies {
            decision.allowed = true;
            decision.cause = Cause::NoAllowPolicy;
            return decision;
        }
        if let Some(rule) = self.first_match(&self.allow, &ctx) {
            decision.allowed = true;
            decision.cause = Cause::AllowedBy(rule);
        }
        decision
    }

    /// The first rule of the group (in policy, then rule order) that matches.
    fn first_match(&self, group: &RuleGroup<'r>, ctx: &Context<'_, '_>) -> Option<RuleRef> {
        if group.always.is_empty() && group.by_namespace.is_empty() {
            return None;
        }
        let mut best: Option<RuleRef> = None;
        let scan = |list: &[RuleRef], best: &mut Option<RuleRef>| {
            for &at in list {
                if best.is_some_and(|b| at >= b) {
                    break;
                }
                if self.rule(at).is_some_and(|rule| rule_matches(rule, ctx)) {
                    *best = Some(at);
                    break;
                }
            }
        };
        scan(&group.always, &mut best);
        if !group.by_namespace.is_empty() {
            if let Some(uri) = ctx.req.peer_uri {
                for ns in namespaces_in(uri) {
                    if let Some(list) = group.by_namespace.get(ns) {
                        scan(list, &mut best);
                    }
                }
            }
        }
        best
    }

    fn rule(&self, at: RuleRef) -> Option<&'r Rule> {
        self.ruleset
            .policies
            .get(at.policy as usize)?
            .rules
            .get(at.rule as usize)
    }
}

/// What clauses read: the request plus the sanitized identity header.
pub(crate) struct Context<'a, 'q> {
    pub req: &'a Request<'q>,
    pub mesh: &'a MeshSettings,
    pub identity: &'a SanitizedIdentity<'q>,
}

pub(crate) fn rule_matches(rule: &Rule, ctx: &Context<'_, '_>) -> bool {
    (rule.from.is_empty() || rule.from.iter().any(|c| conjunction_matches(c, ctx)))
        && (rule.to.is_empty() || rule.to.iter().any(|c| conjunction_matches(c, ctx)))
        && conjunction_matches(&rule.when, ctx)
}

fn conjunction_matches(clauses: &Conjunction, ctx: &Context<'_, '_>) -> bool {
    clauses.iter().all(|c| clause_matches(c, ctx))
}

/// A clause: any value matches the attribute, negated if asked. An absent
/// attribute matches no value, so its negation holds.
pub(crate) fn clause_matches(clause: &Clause, ctx: &Context<'_, '_>) -> bool {
    let any = match attribute_value(&clause.attribute, ctx) {
        None => false,
        Some(value) => clause.values.iter().any(|v| value_matches(v, &value)),
    };
    any != clause.negated
}

/// One attribute's value in a request.
pub(crate) enum AttrValue<'a> {
    Text(Cow<'a, str>),
    Ip([u8; 16]),
    Port(u16),
}

pub(crate) fn attribute_value<'a>(
    attr: &Attribute,
    ctx: &'a Context<'_, '_>,
) -> Option<AttrValue<'a>> {
    let req = ctx.req;
    let text = |s: &'a str| Some(AttrValue::Text(Cow::Borrowed(s)));
    match attr {
        Attribute::PeerUri => req.peer_uri.and_then(text),
        Attribute::SourceIp => req.source_ip.map(AttrValue::Ip),
        Attribute::RemoteIp => req.remote_ip.or(req.source_ip).map(AttrValue::Ip),
        Attribute::DestinationIp => req.destination_ip.map(AttrValue::Ip),
        Attribute::DestinationPort => Some(AttrValue::Port(req.destination_port)),
        Attribute::Sni => req.sni.and_then(text),
        Attribute::Host => text(req.host),
        Attribute::Method => text(req.method),
        Attribute::Path => text(path::path_for_matching(req.path)),
        Attribute::Header(name) => match name.as_str() {
            ":authority" | "host" => text(req.host),
            ":method" => text(req.method),
            ":path" => text(req.path),
            n if n == ctx.mesh.identity_header.name
                && ctx.mesh.identity_header.value != crate::ir::IdentityValue::Off =>
            {
                ctx.identity.value.and_then(text)
            }
            n => req.headers.get(n).map(AttrValue::Text),
        },
        // No verified JWT, ever (see `Attribute::RequestAuth`).
        Attribute::RequestAuth(_) => None,
    }
}

fn value_matches(value: &ValueMatch, actual: &AttrValue<'_>) -> bool {
    match (value, actual) {
        (ValueMatch::Str(m), AttrValue::Text(s)) => m.matches(s),
        (ValueMatch::ServiceAccount { namespace, name }, AttrValue::Text(s)) => {
            service_account_matches(s, namespace, name)
        }
        (ValueMatch::PathTemplate(t), AttrValue::Text(s)) => template_matches(t, s),
        (ValueMatch::Cidr(c), AttrValue::Ip(ip)) => c.contains(ip),
        (ValueMatch::Port(p), AttrValue::Port(q)) => p == q,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn namespaces_in_san() {
        let v: Vec<&str> = namespaces_in("spiffe://td/ns/a/sa/ns/b/x").collect();
        assert_eq!(v, ["a", "b"]);
        let v: Vec<&str> = namespaces_in("spiffe://td/ns/ns/x/").collect();
        assert_eq!(v, ["ns", "x"]);
        assert_eq!(namespaces_in("spiffe://td/ns/a").count(), 0);
        assert_eq!(namespaces_in("spiffe://td/ns//x").count(), 0);
    }

    /// `Attribute::RequestAuth` never has a value (no verified JWT): its
    /// values fail and its negated form holds, in the evaluator, in the
    /// reference interpreter and across an encode/decode round trip. Found
    /// by the differential (Istio builder `single-policy`, `multiple-policies`).
    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn request_auth_is_never_present() {
        use crate::ir::{Action, Clause, Policy, Rule, StrMatch, ValueMatch};
        use crate::request::HeaderList;
        use alloc::string::ToString;
        use alloc::vec;
        let jwt = |negated: bool| Clause {
            attribute: Attribute::RequestAuth("request.auth.principal".to_string()),
            negated,
            values: vec![
                ValueMatch::Str(StrMatch::present()),
                ValueMatch::Str(StrMatch::exact("iss/sub")),
            ],
        };
        let policy = |name: &str, negated: bool| Policy {
            name: name.to_string(),
            namespace: "foo".to_string(),
            action: Action::Allow,
            dry_run: false,
            selector: vec![],
            rules: vec![Rule {
                from: vec![vec![jwt(negated)]],
                to: vec![],
                when: vec![],
            }],
        };
        let headers = [
            ("authorization", "Bearer x.y.z"),
            ("request.auth.principal", "iss/sub"),
        ];
        let req = Request {
            peer_uri: Some("spiffe://cluster.local/ns/a/sa/b"),
            method: "GET",
            path: "/",
            host: "example.com",
            destination_port: 8080,
            source_ip: None,
            remote_ip: None,
            destination_ip: None,
            sni: None,
            headers: &HeaderList(&headers),
        };
        let workload = Workload {
            namespace: "foo",
            labels: &[],
        };
        for (negated, allowed) in [(false, false), (true, true)] {
            let rs = crate::ir::Ruleset {
                mesh: Default::default(),
                policies: vec![policy("jwt", negated)],
            };
            let rs = crate::format::from_bytes(&crate::format::to_bytes(&rs)).unwrap();
            let d = rs.for_workload(&workload).decide(&req);
            assert_eq!(d.allowed, allowed, "negated={negated}");
            let r = crate::reference::decide(&rs, &workload, &req);
            assert!(r.agrees_with(&d), "negated={negated}");
        }
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn refused_paths_are_not_audited() {
        use crate::ir::{Clause, StrMatch};
        use alloc::string::ToString;
        use alloc::vec;
        let ruleset = Ruleset {
            mesh: MeshSettings::default(),
            policies: vec![Policy {
                name: "audit-all".to_string(),
                namespace: "foo".to_string(),
                action: Action::Audit,
                dry_run: false,
                selector: vec![],
                rules: vec![Rule {
                    to: vec![vec![Clause::new(
                        Attribute::Path,
                        vec![ValueMatch::Str(StrMatch::prefix("/"))],
                    )]],
                    ..Rule::default()
                }],
            }],
        };
        let wp = ruleset.for_workload(&Workload {
            namespace: "foo",
            labels: &[],
        });
        let headers = crate::request::HeaderList(&[]);
        let mut req = Request {
            peer_uri: None,
            method: "GET",
            path: "/a/b",
            host: "h",
            destination_port: 80,
            source_ip: None,
            remote_ip: None,
            destination_ip: None,
            sni: None,
            headers: &headers,
        };
        assert!(wp.decide(&req).audit.is_some());
        req.path = "/a//b";
        let d = wp.decide(&req);
        assert_eq!(d.cause, Cause::PathRefused(PathProblem::EmptySegment));
        assert_eq!(d.audit, None);
    }
}
