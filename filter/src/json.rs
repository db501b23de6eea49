//! Just enough JSON for the plugin configuration (RFC 8259, UTF-8).
//!
//! A general JSON crate cost more than the rest of the filter together (~100 KB
//! with serde_json, ~36 KB with miniserde, against a 200 KiB budget for the
//! whole `.wasm`), for a document of two strings and a string map. This reader
//! walks the text once: objects and strings are read, every other value is
//! checked and skipped; nesting is bounded so a hostile document cannot
//! exhaust the stack.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Deeper documents are refused (the configuration needs depth 3).
const MAX_DEPTH: u32 = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.at, self.what)
    }
}

pub struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    depth: u32,
}

type R<T> = Result<T, JsonError>;

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        Reader {
            s: text.as_bytes(),
            i: 0,
            depth: 0,
        }
    }

    pub fn fail<T>(&self, what: &'static str) -> R<T> {
        Err(JsonError { at: self.i, what })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Nothing but white space is left.
    pub fn end(&mut self) -> R<()> {
        self.ws();
        if self.i == self.s.len() {
            Ok(())
        } else {
            self.fail("unexpected text after the document")
        }
    }

    /// `null`, consumed, or nothing.
    pub fn null(&mut self) -> bool {
        self.ws();
        if self.s.get(self.i..).is_some_and(|r| r.starts_with(b"null")) {
            self.i += 4;
            true
        } else {
            false
        }
    }

    /// Reads an object, calling `field` with each key; `field` must read the
    /// value. Duplicate keys are refused: two readers could pick different ones.
    pub fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> R<()>) -> R<()> {
        if !self.eat(b'{') {
            return self.fail("expected an object");
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail("nested too deeply");
        }
        let mut keys: Vec<String> = Vec::new();
        if !self.eat(b'}') {
            loop {
                self.ws();
                let key = self.string()?;
                if keys.contains(&key) {
                    return self.fail("duplicate key");
                }
                if !self.eat(b':') {
                    return self.fail("expected `:`");
                }
                field(self, &key)?;
                keys.push(key);
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return self.fail("expected `,` or `}`");
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Reads a string value.
    pub fn string(&mut self) -> R<String> {
        if !self.eat(b'"') {
            return self.fail("expected a string");
        }
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // The input is a `str` and we stopped at an ASCII byte, so this
            // is a whole run of characters.
            match self.s.get(start..self.i).map(core::str::from_utf8) {
                Some(Ok(run)) => out.push_str(run),
                _ => return self.fail("invalid UTF-8"),
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.escape()?;
                    out.push(c);
                }
                Some(_) => return self.fail("control character in a string"),
                None => return self.fail("unterminated string"),
            }
        }
    }

    fn hex4(&mut self) -> R<u32> {
        let mut v = 0u32;
        for _ in 0..4 {
            let Some(d) = self.peek().and_then(|b| (b as char).to_digit(16)) else {
                return self.fail("bad \\u escape");
            };
            v = v * 16 + d;
            self.i += 1;
        }
        Ok(v)
    }

    fn escape(&mut self) -> R<char> {
        let Some(b) = self.peek() else {
            return self.fail("unterminated escape");
        };
        self.i += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                        return self.fail("unpaired surrogate");
                    }
                    self.i += 2;
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return self.fail("unpaired surrogate");
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                match char::from_u32(code) {
                    Some(c) => c,
                    None => return self.fail("unpaired surrogate"),
                }
            }
            _ => return self.fail("unknown escape"),
        })
    }

    /// Checks and skips any value.
    pub fn skip(&mut self) -> R<()> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(|r, _| r.skip()),
            Some(b'[') => {
                self.i += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return self.fail("nested too deeply");
                }
                if !self.eat(b']') {
                    loop {
                        self.skip()?;
                        if self.eat(b',') {
                            continue;
                        }
                        if self.eat(b']') {
                            break;
                        }
                        return self.fail("expected `,` or `]`");
                    }
                }
                self.depth -= 1;
                Ok(())
            }
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.fail("expected a value"),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> R<()> {
        if self.s.get(self.i..).is_some_and(|r| r.starts_with(word)) {
            self.i += word.len();
            Ok(())
        } else {
            self.fail("expected a value")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> R<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        if self.peek() == Some(b'0') {
            self.i += 1;
        } else if self.digits() == 0 {
            return self.fail("bad number");
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.fail("bad number");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.fail("bad number");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_all(s: &str) -> R<()> {
        let mut r = Reader::new(s);
        r.skip()?;
        r.end()
    }

    #[test]
    fn values() {
        for ok in [
            "{}",
            "[]",
            r#"{"a": [1, -2.5e+3, 0, true, false, null, "x\u00e9\ud83d\ude00\n"], "b": {"c": {}}}"#,
            " 0 ",
        ] {
            assert_eq!(skip_all(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "1.",
            "-",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"a\nb\"",
            "{} x",
            "{\"a\":1,\"a\":2}",
            "tru",
            "[[[[",
        ] {
            assert!(skip_all(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(100_000);
        assert!(skip_all(&deep).is_err());
    }

    #[test]
    fn strings() {
        let mut r = Reader::new(r#""a\"b\\c\/\u0041\ud83d\ude00""#);
        assert_eq!(r.string().unwrap(), "a\"b\\c/A😀");
    }
}
