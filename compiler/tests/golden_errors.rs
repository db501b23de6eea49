//! Golden tests of error messages: every `tests/bad/*.yaml` must be refused,
//! and the messages (`file:line:column: field.path: message`, one per error,
//! all of them) must equal `tests/bad/<name>.stderr` exactly. Files named
//! `mesh-*.yaml` are mesh settings files; the others are policy files.
//!
//! `MESHFENCE_BLESS=1 cargo test --test golden_errors` rewrites the expected
//! files; review the diff before committing it.

use std::path::Path;

use meshfence_compiler::{compile_str, mesh, CompileOptions};

fn messages(name: &str, text: &str) -> Option<String> {
    let shown = format!("bad/{name}");
    let result = if name.starts_with("mesh-") {
        mesh::parse_str(&shown, text).map(|_| ())
    } else {
        compile_str(&shown, text, &CompileOptions::default()).map(|_| ())
    };
    result.err().map(|e| e.to_string())
}

#[test]
fn bad_inputs_are_refused_with_exact_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let bless = std::env::var_os("MESHFENCE_BLESS").is_some();
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 15, "only {} bad inputs", inputs.len());
    let mut problems = Vec::new();
    let mut distinct = std::collections::BTreeSet::new();
    for input in &inputs {
        let name = input.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(input).unwrap();
        let Some(got) = messages(&name, &text) else {
            problems.push(format!("{name}: accepted, but it is bad input"));
            continue;
        };
        for line in got.lines() {
            // Every line names file:line:column.
            let mut parts = line.splitn(4, ':');
            let (file, l, c) = (parts.next(), parts.next(), parts.next());
            assert_eq!(file, Some(format!("bad/{name}").as_str()), "{line}");
            assert!(l.unwrap().parse::<usize>().unwrap() >= 1, "{line}");
            assert!(c.unwrap().parse::<usize>().unwrap() >= 1, "{line}");
            distinct.insert(
                line.split_once(": ")
                    .map(|x| x.1)
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        let expected_path = input.with_extension("stderr");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(want) if want == got => {}
            Ok(want) => problems.push(format!(
                "{name}: messages differ\n--- expected\n{want}--- got\n{got}"
            )),
            Err(_) => problems.push(format!("{name}: no {}", expected_path.display())),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        distinct.len() >= 15,
        "only {} distinct messages",
        distinct.len()
    );
}
