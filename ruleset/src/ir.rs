//! The intermediate representation: what a compiled ruleset says, independent of
//! how it is stored.
//!
//! Every front end (Istio `AuthorizationPolicy`, meshfence `TenantPolicy`) lowers to
//! these types, the binary format stores exactly these types, and the evaluator
//! decides over them. The shapes mirror what istiod hands to Envoy's RBAC filter
//! (a policy per rule, a rule as `from` OR-list × `to` OR-list × `when` AND-list,
//! each clause an OR of values, possibly negated), so that a ruleset decides as
//! the RBAC filters Istio would generate.

use alloc::string::String;
use alloc::vec::Vec;

/// A whole compiled ruleset: the mesh settings and every policy of every workload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    pub mesh: MeshSettings,
    pub policies: Vec<Policy>,
}

/// Settings that hold for the whole mesh rather than one policy (DESIGN §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// The mesh's own trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Other trust domains treated as the same one (already expanded into
    /// principals by the compiler; kept for `inspect` and `explain`).
    pub trust_domain_aliases: Vec<String>,
    /// Policies in this namespace apply to every workload of the mesh.
    pub root_namespace: String,
    /// The identity header the filter sanitizes and sets.
    pub identity_header: IdentityHeader,
    /// Namespaces whose verified workloads may pass an identity header through.
    pub trusted_forwarders: Vec<String>,
    /// What happens to a request that carried an identity header it may not send.
    pub spoofed_identity: SpoofPolicy,
    pub path_policy: PathPolicy,
    /// The local reply for a denied request.
    pub deny_status: u16,
    pub deny_body: String,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            trust_domain: String::from("cluster.local"),
            trust_domain_aliases: Vec::new(),
            root_namespace: String::from("istio-system"),
            identity_header: IdentityHeader::default(),
            trusted_forwarders: Vec::new(),
            spoofed_identity: SpoofPolicy::Strip,
            path_policy: PathPolicy::Strict,
            deny_status: 403,
            deny_body: String::from("RBAC: access denied"),
        }
    }
}

/// The verified identity header: its name and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    /// Lower-case header name, `x-tenant-identity` by default.
    pub name: String,
    pub value: IdentityValue,
}

impl Default for IdentityHeader {
    fn default() -> Self {
        IdentityHeader {
            name: String::from("x-tenant-identity"),
            value: IdentityValue::Spiffe,
        }
    }
}

/// What the identity header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityValue {
    /// The full SPIFFE URI, `spiffe://td/ns/x/sa/y`.
    Spiffe,
    /// The Istio principal, the URI without `spiffe://`.
    Principal,
    /// The header is neither stripped nor set.
    Off,
}

/// What becomes of a request carrying an identity header its caller may not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpoofPolicy {
    /// Remove it and go on with the verified value.
    Strip,
    /// Remove it and deny the request.
    Deny,
}

/// How the filter treats paths an attacker may have shaped (DESIGN §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathPolicy {
    /// Refuse ambiguous paths (dot segments, `//`, encoded `/` `\` `.` NUL, `;`,
    /// backslash) before any rule is read.
    Strict,
    /// Match paths exactly as Istio's RBAC does.
    Istio,
}

/// One authorization policy, as written by its author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub action: Action,
    /// `istio.io/dry-run: "true"`: evaluated and reported, never enforced.
    pub dry_run: bool,
    /// The workload selector: every pair must be among the workload's labels.
    /// Empty selects every workload of the namespace (or of the mesh, in the
    /// root namespace).
    pub selector: Vec<(String, String)>,
    /// The rules, ORed. An ALLOW policy without rules (`spec: {}`) never matches.
    pub rules: Vec<Rule>,
}

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Deny,
    Audit,
}

/// One rule: matches when any `from` source, any `to` operation and every `when`
/// condition match. An empty `from` or `to` list matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub from: Vec<Conjunction>,
    pub to: Vec<Conjunction>,
    pub when: Conjunction,
}

/// Clauses that must all match.
pub type Conjunction = Vec<Clause>;

/// One field of a source, operation or condition: matches when any value matches
/// the request's attribute; `negated` turns that into "no value matches".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub attribute: Attribute,
    pub negated: bool,
    pub values: Vec<ValueMatch>,
}

/// The request attribute a clause reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attribute {
    /// The peer certificate's URI SAN (`spiffe://...`). Absent on plaintext
    /// requests, where no value matches.
    PeerUri,
    /// The downstream connection's address (Istio `ipBlocks`, `source.ip`).
    SourceIp,
    /// The original client address (Istio `remoteIpBlocks`, `remote.ip`).
    RemoteIp,
    /// The local address the request arrived on (`destination.ip`).
    DestinationIp,
    /// The local port the request arrived on (`ports`, `destination.port`).
    DestinationPort,
    /// The TLS SNI of the downstream connection (`connection.sni`).
    Sni,
    /// `:authority`.
    Host,
    /// `:method`.
    Method,
    /// The path without query and fragment.
    Path,
    /// A request header by lower-case name; several copies read as one value
    /// joined by `,` (as Envoy's header matcher reads them).
    Header(String),
    /// A fact of a verified JWT (Istio `requestPrincipals`, `request.auth.*`),
    /// named by its Istio key (`request.auth.principal`,
    /// `request.auth.claims[iss]`, ...). meshfence verifies no JWT, so a request
    /// never has a value for it: its values never match and its negated form
    /// always holds, exactly as Envoy's RBAC metadata matcher behaves when no
    /// `jwt_authn` metadata exists. The compiler emits it only under the mesh
    /// setting `requestAuthentication: none` (no RequestAuthentication in the
    /// mesh, so no request carries a verified JWT).
    RequestAuth(String),
}

/// One value of a clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    /// A string matcher on a string attribute.
    Str(StrMatch),
    /// An Istio service account: the SPIFFE URI
    /// `spiffe://<td>/ns/<namespace>/[<any>/]sa/<name>[/<any>]`, as Istio's
    /// regex `spiffe://.+/ns/NS/(.+/|)sa/SA(/.+)?` reads it.
    ServiceAccount { namespace: String, name: String },
    /// An address range on an IP attribute.
    Cidr(Cidr),
    /// A port on `DestinationPort`.
    Port(u16),
    /// An Envoy URI template on `Path` (`*` one segment, `**` the rest).
    PathTemplate(String),
}

/// A string matcher. `ignore_case` compares ASCII letters case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrMatch {
    pub kind: StrMatchKind,
    pub ignore_case: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatchKind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// Matches any value that is present, even empty (Envoy `present_match`).
    Present,
    /// A whole-value pattern of literal text and wildcards (the regexes Istio
    /// generates are all of this shape).
    Pattern(Vec<PatternPiece>),
}

/// A piece of a [`StrMatchKind::Pattern`]. Wildcards never match a newline,
/// as RE2's `.` does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternPiece {
    Literal(String),
    /// `.*`
    AnyRun,
    /// `.+`
    AnyNonEmptyRun,
    /// `[^/]*`
    SegmentRun,
}

/// An IPv4 or IPv6 address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address as 16 bytes; IPv4 as an IPv4-mapped IPv6 address.
    pub address: [u8; 16],
    /// Prefix length over the 128-bit form (IPv4 /n is stored as 96 + n).
    pub prefix_len: u8,
}

impl StrMatch {
    pub fn exact(s: impl Into<String>) -> Self {
        StrMatch {
            kind: StrMatchKind::Exact(s.into()),
            ignore_case: false,
        }
    }
    pub fn prefix(s: impl Into<String>) -> Self {
        StrMatch {
            kind: StrMatchKind::Prefix(s.into()),
            ignore_case: false,
        }
    }
    pub fn suffix(s: impl Into<String>) -> Self {
        StrMatch {
            kind: StrMatchKind::Suffix(s.into()),
            ignore_case: false,
        }
    }
    pub fn present() -> Self {
        StrMatch {
            kind: StrMatchKind::Present,
            ignore_case: false,
        }
    }
    pub fn pattern(pieces: Vec<PatternPiece>) -> Self {
        StrMatch {
            kind: StrMatchKind::Pattern(pieces),
            ignore_case: false,
        }
    }
    pub fn ignoring_case(mut self) -> Self {
        self.ignore_case = true;
        self
    }
}

impl Rule {
    /// Every clause of the rule: its sources', its operations' and its conditions'.
    pub fn clauses(&self) -> impl Iterator<Item = &Clause> {
        self.from
            .iter()
            .chain(self.to.iter())
            .flatten()
            .chain(self.when.iter())
    }
}

impl Clause {
    pub fn new(attribute: Attribute, values: Vec<ValueMatch>) -> Self {
        Clause {
            attribute,
            negated: false,
            values,
        }
    }
    pub fn not(attribute: Attribute, values: Vec<ValueMatch>) -> Self {
        Clause {
            attribute,
            negated: true,
            values,
        }
    }
}
