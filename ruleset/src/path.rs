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
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// Checks a request path (query and fragment are ignored) under `strict`.
pub fn check_strict(path: &str) -> Result<(), PathProblem> {
    let p = path_for_matching(path).as_bytes();
    if p.first() != Some(&b'/') {
        return Err(PathProblem::NotAbsolute);
    }
    for (i, &b) in p.iter().enumerate() {
        match b {
            b'\\' => return Err(PathProblem::Backslash),
            b';' => return Err(PathProblem::Semicolon),
            b'%' => {
                let hex = p.get(i + 1..i + 3).ok_or(PathProblem::EncodedSeparator)?;
                let (Some(h), Some(l)) = (
                    hex.first().and_then(|c| (*c as char).to_digit(16)),
                    hex.get(1).and_then(|c| (*c as char).to_digit(16)),
                ) else {
                    return Err(PathProblem::EncodedSeparator);
                };
                if matches!(h * 16 + l, 0x2f | 0x5c | 0x2e | 0x00) {
                    return Err(PathProblem::EncodedSeparator);
                }
            }
            0..=0x1f | 0x7f..=0xff => return Err(PathProblem::ControlCharacter),
            _ => {}
        }
    }
    // Segments after the leading '/': a trailing '/' leaves one empty final
    // segment, which is allowed ("/a/" is unambiguous).
    let mut start = 1usize;
    for slash in memchr::memchr_iter(b'/', p).skip(1) {
        match p.get(start..slash) {
            Some(b"." | b"..") => return Err(PathProblem::DotSegment),
            Some(b"") => return Err(PathProblem::EmptySegment),
            _ => {}
        }
        start = slash + 1;
    }
    if let Some(b"." | b"..") = p.get(start..) {
        return Err(PathProblem::DotSegment);
    }
    Ok(())
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
