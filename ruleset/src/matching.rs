//! How one value matcher reads one attribute value: string matchers, wildcard
//! patterns, service accounts, address ranges and URI templates.
//!
//! Each function here implements the Envoy matcher that istiod generates for the
//! corresponding Istio field, byte for byte: regex `.` never matches a newline,
//! `ignore_case` folds ASCII only, `present_match` accepts an empty value.

use alloc::vec;

use crate::ir::{Cidr, PatternPiece, StrMatch, StrMatchKind};

impl StrMatch {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let ci = self.ignore_case;
        match &self.kind {
            StrMatchKind::Exact(s) => eq(value.as_bytes(), s.as_bytes(), ci),
            StrMatchKind::Prefix(s) => starts_with(value.as_bytes(), s.as_bytes(), ci),
            StrMatchKind::Suffix(s) => ends_with(value.as_bytes(), s.as_bytes(), ci),
            StrMatchKind::Contains(s) => find(value.as_bytes(), s.as_bytes(), 0, ci).is_some(),
            StrMatchKind::Present => true,
            StrMatchKind::Pattern(pieces) => pattern_matches(pieces, value.as_bytes(), ci),
        }
    }
}

fn eq(a: &[u8], b: &[u8], ci: bool) -> bool {
    if ci {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn starts_with(s: &[u8], p: &[u8], ci: bool) -> bool {
    s.get(..p.len()).is_some_and(|head| eq(head, p, ci))
}

fn ends_with(s: &[u8], p: &[u8], ci: bool) -> bool {
    s.len()
        .checked_sub(p.len())
        .and_then(|at| s.get(at..))
        .is_some_and(|tail| eq(tail, p, ci))
}

/// The first index `>= from` at which `needle` occurs in `hay`.
fn find(hay: &[u8], needle: &[u8], from: usize, ci: bool) -> Option<usize> {
    let rest = hay.get(from..)?;
    if needle.is_empty() {
        return Some(from);
    }
    if ci {
        return rest
            .windows(needle.len())
            .position(|w| eq(w, needle, true))
            .map(|i| i + from);
    }
    // Values and literals are short (a SAN, a path): candidates by first byte,
    // then one comparison each, beats any searcher's setup.
    let (&first, tail) = needle.split_first()?;
    let last_start = rest.len().checked_sub(needle.len())?;
    let window = rest.get(..=last_start)?;
    window
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == first)
        .find(|&(i, _)| rest.get(i + 1..i + needle.len()) == Some(tail))
        .map(|(i, _)| i + from)
}

/// The first index at which `needle` occurs in `hay` (case-sensitive).
pub fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    find(hay, needle, 0, false)
}

/// Matches a whole value against literal text and wildcards.
///
/// Wildcards never match `\n`, so a value with a newline cannot match (the
/// format refuses literals containing one). Between wildcards the leftmost
/// occurrence of each literal is taken: it leaves the most room for what
/// follows and the shortest (so least constrained) wildcard region before it.
/// That greedy choice is exact unless two literals are adjacent or a `[^/]*`
/// follows a literal that itself follows a wildcard (a later occurrence of
/// the literal could leave the `[^/]*` a region without `/`): such patterns
/// go to [`pattern_matches_general`].
pub fn pattern_matches(pieces: &[PatternPiece], value: &[u8], ci: bool) -> bool {
    if value.contains(&b'\n') {
        return false;
    }
    if !greedy_is_exact(pieces) {
        return pattern_matches_general(pieces, value, ci);
    }
    let mut pos = 0usize;
    let mut pending: Option<&PatternPiece> = None;
    let mut iter = pieces.iter().peekable();
    while let Some(piece) = iter.next() {
        let is_last = iter.peek().is_none();
        match piece {
            PatternPiece::Literal(lit) => {
                let lit = lit.as_bytes();
                let at = match pending.take() {
                    None => {
                        if !value.get(pos..).is_some_and(|r| starts_with(r, lit, ci)) {
                            return false;
                        }
                        pos
                    }
                    Some(wild) => {
                        let min = pos + min_len(wild);
                        let at = if is_last {
                            match value.len().checked_sub(lit.len()) {
                                Some(at) if at >= min && ends_with(value, lit, ci) => at,
                                _ => return false,
                            }
                        } else {
                            match find(value, lit, min, ci) {
                                Some(at) => at,
                                None => return false,
                            }
                        };
                        if !region_fits(wild, value.get(pos..at)) {
                            return false;
                        }
                        at
                    }
                };
                pos = at + lit.len();
                if is_last && pos != value.len() {
                    return false;
                }
            }
            wild => {
                if pending.is_some() {
                    // Two wildcards in a row never come out of the compiler and
                    // are refused at load; read them as the stricter one.
                    return false;
                }
                pending = Some(wild);
            }
        }
    }
    match pending {
        Some(wild) => value.len() >= pos + min_len(wild) && region_fits(wild, value.get(pos..)),
        None => pos == value.len(),
    }
}

fn is_literal(p: &PatternPiece) -> bool {
    matches!(p, PatternPiece::Literal(_))
}

/// Whether the leftmost-occurrence scan of [`pattern_matches`] is exact.
fn greedy_is_exact(pieces: &[PatternPiece]) -> bool {
    let adjacent_literals = pieces
        .windows(2)
        .any(|w| matches!(w, [a, b] if is_literal(a) && is_literal(b)));
    let segment_after_floating_literal = pieces
        .windows(3)
        .any(|w| matches!(w, [a, b, PatternPiece::SegmentRun] if !is_literal(a) && is_literal(b)));
    !adjacent_literals && !segment_after_floating_literal
}

/// Any pattern, by tracking every position the pieces so far can end at.
/// Time O(pieces × value × literal length), two allocations of the value's
/// length. `value` must not contain a newline.
pub fn pattern_matches_general(pieces: &[PatternPiece], value: &[u8], ci: bool) -> bool {
    let n = value.len();
    let mut reach = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    if let Some(start) = reach.first_mut() {
        *start = true;
    }
    for piece in pieces {
        next.iter_mut().for_each(|x| *x = false);
        match piece {
            PatternPiece::Literal(lit) => {
                let lit = lit.as_bytes();
                for (p, _) in reach.iter().enumerate().filter(|(_, &r)| r) {
                    if value
                        .get(p..)
                        .is_some_and(|rest| starts_with(rest, lit, ci))
                    {
                        if let Some(x) = next.get_mut(p + lit.len()) {
                            *x = true;
                        }
                    }
                }
            }
            PatternPiece::AnyRun | PatternPiece::AnyNonEmptyRun => {
                if let Some(first) = reach.iter().position(|&r| r) {
                    for x in next.iter_mut().skip(first + min_len(piece)) {
                        *x = true;
                    }
                }
            }
            PatternPiece::SegmentRun => {
                // `active`: some reached p <= q has no `/` in value[p..q].
                let mut active = false;
                for (q, x) in next.iter_mut().enumerate() {
                    if q > 0 && value.get(q - 1) == Some(&b'/') {
                        active = false;
                    }
                    if reach.get(q) == Some(&true) {
                        active = true;
                    }
                    *x = active;
                }
            }
        }
        core::mem::swap(&mut reach, &mut next);
    }
    reach.get(n) == Some(&true)
}

fn min_len(wild: &PatternPiece) -> usize {
    match wild {
        PatternPiece::AnyNonEmptyRun => 1,
        _ => 0,
    }
}

fn region_fits(wild: &PatternPiece, region: Option<&[u8]>) -> bool {
    let Some(region) = region else { return false };
    match wild {
        PatternPiece::SegmentRun => !region.contains(&b'/'),
        PatternPiece::AnyNonEmptyRun => !region.is_empty(),
        _ => true,
    }
}

/// Istio's service-account matcher: `spiffe://.+/ns/NS/(.+/|)sa/SA(/.+)?`.
pub fn service_account_matches(uri: &str, namespace: &str, name: &str) -> bool {
    let uri = uri.as_bytes();
    if uri.contains(&b'\n') {
        return false;
    }
    let Some(rest) = uri.strip_prefix(b"spiffe://".as_slice()) else {
        return false;
    };
    // Every occurrence of `/ns/NS/` after at least one byte of trust domain.
    let mut from = 1usize;
    while let Some((slash, end)) = find_ns(rest, namespace.as_bytes(), from) {
        if sa_tail_matches(rest.get(end..).unwrap_or_default(), name.as_bytes()) {
            return true;
        }
        from = slash + 1;
    }
    false
}

/// Finds `/ns/<namespace>/` with its first slash at or after `from`, returning
/// the slash's index and the index just past the match.
fn find_ns(hay: &[u8], namespace: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut at = from;
    loop {
        let i = find(hay, b"/ns/", at, false)?;
        let start = i + 4;
        let end = start + namespace.len();
        if hay.get(start..end) == Some(namespace) && hay.get(end) == Some(&b'/') {
            return Some((i, end + 1));
        }
        at = i + 1;
    }
}

/// `(.+/|)sa/SA(/.+)?` anchored at both ends.
fn sa_tail_matches(s: &[u8], name: &[u8]) -> bool {
    let mut from = 0usize;
    while let Some(i) = find(s, b"sa/", from, false) {
        let dir_ok = i == 0 || (i >= 2 && s.get(i - 1) == Some(&b'/'));
        let end = i + 3 + name.len();
        if dir_ok && s.get(i + 3..end) == Some(name) {
            match s.get(end..) {
                Some([]) => return true,
                Some([b'/', _, ..]) => return true,
                _ => {}
            }
        }
        from = i + 1;
    }
    false
}

impl Cidr {
    /// Whether the address (16 bytes, IPv4 mapped) lies in the range.
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        let full = usize::from(self.prefix_len / 8);
        let rem = self.prefix_len % 8;
        let (Some(a), Some(b)) = (self.address.get(..full), addr.get(..full)) else {
            return false;
        };
        if a != b {
            return false;
        }
        if rem == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rem);
        match (self.address.get(full), addr.get(full)) {
            (Some(x), Some(y)) => x & mask == y & mask,
            _ => false,
        }
    }
}

/// Envoy's URI template matcher (`envoy.path.match.uri_template`): `*` matches
/// one non-empty path segment, `**` the rest of the path (zero or more
/// segments); both consume only characters that are valid in a path segment.
pub fn template_matches(template: &str, path: &str) -> bool {
    let t = template.as_bytes();
    let p = path.as_bytes();
    template_rec(t, p, 0)
}

fn is_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b)
}

fn template_rec(t: &[u8], p: &[u8], depth: u32) -> bool {
    if depth > 32 {
        return false;
    }
    match t {
        [] => p.is_empty(),
        [b'*', b'*', rest @ ..] => {
            // Try every split: `**` takes p[..k], all segment characters or '/'.
            let mut k = 0usize;
            loop {
                if template_rec(rest, p.get(k..).unwrap_or_default(), depth + 1) {
                    return true;
                }
                match p.get(k) {
                    Some(&c) if c == b'/' || is_segment_char(c) => k += 1,
                    _ => return false,
                }
            }
        }
        [b'*', rest @ ..] => {
            let n = p.iter().take_while(|&&c| is_segment_char(c)).count();
            (1..=n)
                .rev()
                .any(|k| template_rec(rest, p.get(k..).unwrap_or_default(), depth + 1))
        }
        _ => {
            // A run of literal bytes, compared at once: only wildcards nest and
            // count toward the depth limit (a template longer than 32 bytes
            // must still match).
            let n = t.iter().position(|&b| b == b'*').unwrap_or(t.len());
            let (lit, rest) = t.split_at(n);
            match p.strip_prefix(lit) {
                Some(prest) => template_rec(rest, prest, depth),
                None => false,
            }
        }
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

    fn lit(s: &str) -> PatternPiece {
        Literal(s.to_string())
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn namespace_pattern() {
        // `.*/ns/foo/.*`
        let p = vec![AnyRun, lit("/ns/foo/"), AnyRun];
        assert!(pattern_matches(&p, b"spiffe://td/ns/foo/sa/x", false));
        assert!(!pattern_matches(&p, b"spiffe://td/ns/foobar/sa/x", false));
        assert!(!pattern_matches(&p, b"spiffe://td/ns/foo\n/sa/x", false));
        // `.*/ns/ns-prefix-.*/.*`
        let p = vec![AnyRun, lit("/ns/ns-prefix-"), AnyRun, lit("/"), AnyRun];
        assert!(pattern_matches(
            &p,
            b"spiffe://td/ns/ns-prefix-a/sa/x",
            false
        ));
        assert!(!pattern_matches(&p, b"spiffe://td/ns/ns-prefix-a", false));
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn segment_run_pattern() {
        // `spiffe://bad[^/]*/.*`
        let p = vec![lit("spiffe://bad"), SegmentRun, lit("/"), AnyRun];
        assert!(pattern_matches(&p, b"spiffe://bad/ns/a", false));
        assert!(pattern_matches(&p, b"spiffe://badx.io/ns/a", false));
        assert!(!pattern_matches(&p, b"spiffe://bad", false));
        assert!(!pattern_matches(&p, b"spiffe://good/bad/x", false));
        // `spiffe://.*-suffix`
        let p = vec![lit("spiffe://"), AnyRun, lit("-suffix")];
        assert!(pattern_matches(&p, b"spiffe://a-suffix", false));
        assert!(pattern_matches(&p, b"spiffe://-suffix-suffix", false));
        assert!(!pattern_matches(&p, b"spiffe://a-suffixx", false));
        // `.+`
        let p = vec![AnyNonEmptyRun];
        assert!(pattern_matches(&p, b"x", false));
        assert!(!pattern_matches(&p, b"", false));
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn patterns_the_greedy_scan_gets_wrong() {
        // `.*a[^/]*b.*`: the leftmost `a` leaves a `/` in the `[^/]*`.
        let p = vec![AnyRun, lit("a"), SegmentRun, lit("b"), AnyRun];
        assert!(pattern_matches(&p, b"a/ab/x", false));
        assert!(!pattern_matches(&p, b"a/a/b", false));
        // Adjacent literals: `.*ab`, `.*ab.*`.
        assert!(pattern_matches(
            &[AnyRun, lit("a"), lit("b")],
            b"aab",
            false
        ));
        assert!(pattern_matches(
            &[AnyRun, lit("a"), lit("b"), AnyRun],
            b"aabx",
            false
        ));
        assert!(!pattern_matches(
            &[AnyRun, lit("a"), lit("b")],
            b"aba",
            false
        ));
        // The general matcher agrees with the greedy one where both apply.
        let p = vec![AnyRun, lit("/ns/ns-prefix-"), AnyRun, lit("/"), AnyRun];
        for v in [
            &b"spiffe://td/ns/ns-prefix-a/sa/x"[..],
            b"spiffe://td/ns/ns-prefix-a",
        ] {
            assert_eq!(
                pattern_matches(&p, v, false),
                pattern_matches_general(&p, v, false)
            );
        }
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn service_accounts() {
        assert!(service_account_matches(
            "spiffe://td/ns/my-ns/sa/my-sa",
            "my-ns",
            "my-sa"
        ));
        assert!(service_account_matches(
            "spiffe://td/ns/my-ns/x/sa/my-sa/y",
            "my-ns",
            "my-sa"
        ));
        assert!(!service_account_matches(
            "spiffe://td/ns/my-ns/sa/my-sa-2",
            "my-ns",
            "my-sa"
        ));
        assert!(!service_account_matches(
            "spiffe://td/ns/my-ns/sa/my-sa/",
            "my-ns",
            "my-sa"
        ));
        assert!(!service_account_matches(
            "spiffe:///ns/my-ns/sa/my-sa",
            "my-ns",
            "my-sa"
        ));
        assert!(!service_account_matches(
            "spiffe://td/ns/my-ns/xsa/my-sa",
            "my-ns",
            "my-sa"
        ));
        assert!(service_account_matches(
            "spiffe://td/ns/a/ns/my-ns/sa/my-sa",
            "my-ns",
            "my-sa"
        ));
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn templates() {
        assert!(template_matches("/path/template/*", "/path/template/x"));
        assert!(!template_matches("/path/template/*", "/path/template/"));
        assert!(!template_matches("/path/template/*", "/path/template/x/y"));
        assert!(template_matches("/**/path/template", "/a/b/path/template"));
        assert!(template_matches("/a/**", "/a/"));
        assert!(template_matches("/a/**", "/a/b/c"));
        // Longer than the wildcard depth limit, in literal bytes.
        assert!(template_matches(
            "/ingest/tenant-a/reports/2026/*/summary",
            "/ingest/tenant-a/reports/2026/daily/summary"
        ));
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn cidrs() {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12] = 192;
        a[13] = 168;
        let c = Cidr {
            address: a,
            prefix_len: 96 + 16,
        };
        let mut x = a;
        x[14] = 7;
        assert!(c.contains(&x));
        x[13] = 169;
        assert!(!c.contains(&x));
    }
}
