//! The request path as rules see it, and the `strict` path policy (DESIGN §8).
//!
//! Rules never see the query or the fragment. Under `strict`, paths whose
//! meaning depends on who normalizes them are refused before any rule is read.

/// Why a path was refused under the `strict` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// Not starting with `/` (an absolute URI or `*` form).
    NotAbsolute,
    /// A `.` or `..` segment.
    DotSegment,
    /// An empty segment (`//`).
    EmptySegment,
    /// `%2F`, `%5C`, `%2E` or `%00` in any letter case, or a malformed escape.
    EncodedSeparator,
    /// `;` (path parameters some servers strip).
    Semicolon,
    /// A raw backslash.
    Backslash,
    /// A control character or a byte above 0x7e.
    ControlCharacter,
}

impl PathProblem {
    pub fn as_str(&self) -> &'static str {
        match self {
            PathProblem::NotAbsolute => "path is not absolute",
            PathProblem::DotSegment => "path has a dot segment",
            PathProblem::EmptySegment => "path has an empty segment",
            PathProblem::EncodedSeparator => "path has an encoded separator, dot or NUL",
            PathProblem::Semicolon => "path has a semicolon",
            PathProblem::Backslash => "path has a backslash",
            PathProblem::ControlCharacter => "path has a control or non-ASCII byte",
        }
    }
}

/// The path without its query and fragment: what path rules match.
pub fn path_for_matching(path: &str) -> &str {
    let end = path
        .bytes()
        .position(|b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// What a path byte means to the `strict` check.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ByteClass {
    Plain,
    Slash,
    Percent,
    Semicolon,
    Backslash,
    Control,
}

/// The class of every byte, so the check reads each byte once with one load.
// Built at compile time: an index out of range would fail the build, not a request.
#[allow(clippy::indexing_slicing)]
const BYTE_CLASS: [ByteClass; 256] = {
    let mut t = [ByteClass::Plain; 256];
    let mut b = 0usize;
    while b < 256 {
        t[b] = match b as u8 {
            b'/' => ByteClass::Slash,
            b'%' => ByteClass::Percent,
            b';' => ByteClass::Semicolon,
            b'\\' => ByteClass::Backslash,
            0..=0x1f | 0x7f..=0xff => ByteClass::Control,
            _ => ByteClass::Plain,
        };
        b += 1;
    }
    t
};

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The problem of one segment (between slashes), if any.
fn segment_problem(seg: Option<&[u8]>, last: bool) -> Option<PathProblem> {
    match seg {
        Some(b"." | b"..") => Some(PathProblem::DotSegment),
        Some(b"") if !last => Some(PathProblem::EmptySegment),
        _ => None,
    }
}

/// Checks a request path (query and fragment are ignored) under `strict`.
pub fn check_strict(path: &str) -> Result<(), PathProblem> {
    let p = path_for_matching(path).as_bytes();
    if p.first() != Some(&b'/') {
        return Err(PathProblem::NotAbsolute);
    }
    // One pass. A byte problem anywhere outranks a segment problem, so the
    // first segment problem is kept until the end.
    let mut segment = None;
    let mut start = 1usize;
    let mut i = 1usize;
    while let Some(&b) = p.get(i) {
        match BYTE_CLASS
            .get(usize::from(b))
            .copied()
            .unwrap_or(ByteClass::Control)
        {
            ByteClass::Plain => {}
            ByteClass::Slash => {
                if segment.is_none() {
                    segment = segment_problem(p.get(start..i), false);
                }
                start = i + 1;
            }
            ByteClass::Percent => {
                let value = match (p.get(i + 1), p.get(i + 2)) {
                    (Some(&h), Some(&l)) => hex_value(h).zip(hex_value(l)).map(|(h, l)| h * 16 + l),
                    _ => None,
                };
                if matches!(value, None | Some(0x2f | 0x5c | 0x2e | 0x00)) {
                    return Err(PathProblem::EncodedSeparator);
                }
            }
            ByteClass::Semicolon => return Err(PathProblem::Semicolon),
            ByteClass::Backslash => return Err(PathProblem::Backslash),
            ByteClass::Control => return Err(PathProblem::ControlCharacter),
        }
        i += 1;
    }
    // A trailing '/' leaves one empty final segment, which is allowed ("/a/"
    // is unambiguous).
    match segment.or_else(|| segment_problem(p.get(start..), true)) {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn strips_query_and_fragment() {
        assert_eq!(path_for_matching("/a?b#c"), "/a");
        assert_eq!(path_for_matching("/a#c?b"), "/a");
        assert_eq!(path_for_matching("/a"), "/a");
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn strict_refuses_ambiguous_paths() {
        for ok in [
            "/",
            "/a",
            "/a/",
            "/a/b.c",
            "/a%20b",
            "/a?x=//..;",
            "/a#/../",
        ] {
            assert_eq!(check_strict(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("/a/../b", PathProblem::DotSegment),
            ("/a/.", PathProblem::DotSegment),
            ("/api//admin", PathProblem::EmptySegment),
            ("//admin", PathProblem::EmptySegment),
            ("/api/admin%2Fx", PathProblem::EncodedSeparator),
            ("/api/admin%2fx", PathProblem::EncodedSeparator),
            ("/api%5cadmin", PathProblem::EncodedSeparator),
            ("/api/%2e%2e/admin", PathProblem::EncodedSeparator),
            ("/api/%00", PathProblem::EncodedSeparator),
            ("/api/%zz", PathProblem::EncodedSeparator),
            ("/api/%2", PathProblem::EncodedSeparator),
            ("/api/admin;x=1", PathProblem::Semicolon),
            ("/api\\admin", PathProblem::Backslash),
            ("admin", PathProblem::NotAbsolute),
            ("*", PathProblem::NotAbsolute),
            ("/a\tb", PathProblem::ControlCharacter),
        ];
        for (p, want) in cases {
            assert_eq!(check_strict(p), Err(want), "{p}");
        }
    }
}
