//! The parsers that read host and operator bytes never panic (a panic in the
//! `.wasm` is a trap), natively checked over random input.

use meshfence_filter::config;
use meshfence_filter::json::Reader;
use meshfence_filter::pairs::Pairs;
use proptest::prelude::*;

fn json_ish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\",
            "\\u",
            "d800",
            "\"ruleset\"",
            "\"workload\"",
            "\"namespace\"",
            "\"labels\"",
            "null",
            "true",
            "1",
            "-0.5e3",
            " ",
            "x",
            "\u{e9}",
        ]),
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn config_parse_never_panics(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = config::parse(&raw);
    }

    #[test]
    fn json_shaped_garbage_never_panics(text in json_ish()) {
        let _ = config::parse(text.as_bytes());
        let mut r = Reader::new(&text);
        let _ = r.skip().and_then(|()| r.end());
    }

    #[test]
    fn pairs_parse_never_panics(raw in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Some(p) = Pairs::parse(&raw) {
            prop_assert_eq!(p.iter().count(), p.len());
        }
    }

    #[test]
    fn json_strings_round_trip(s in ".{0,40}") {
        // Escape as JSON does, then read back.
        let mut quoted = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
                c if (c as u32) > 0xffff => {
                    let v = c as u32 - 0x10000;
                    quoted.push_str(&format!("\\u{:04x}\\u{:04x}", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff)));
                }
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        prop_assert_eq!(Reader::new(&quoted).string().unwrap(), s);
    }
}
