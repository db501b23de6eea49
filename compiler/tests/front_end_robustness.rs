//! The front end never panics: mutated copies of Istio's inputs (characters
//! deleted, inserted, lines swapped) are either compiled or refused with
//! positioned errors.

use meshfence_compiler::{compile_str, CompileOptions};

const BUILDER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/testdata/builder/http"
);

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !chars.is_empty() => {
                let i = rng.below(chars.len());
                chars.remove(i);
            }
            1 => {
                const ALPHABET: &[char] = &[
                    ' ', '\n', ':', '-', '[', ']', '{', '}', '"', '*', '/', '&', '!', '#', '\t',
                    'é', '0',
                ];
                let i = rng.below(chars.len() + 1);
                chars.insert(i, ALPHABET[rng.below(ALPHABET.len())]);
            }
            _ => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if lines.len() > 1 {
                    let a = rng.below(lines.len());
                    let b = rng.below(lines.len());
                    lines.swap(a, b);
                }
                chars = lines.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn mutated_inputs_never_panic() {
    let mut inputs: Vec<_> = std::fs::read_dir(BUILDER)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-in.yaml"))
        .collect();
    inputs.sort();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut refused, mut accepted) = (0, 0);
    for input in &inputs {
        let text = std::fs::read_to_string(input).unwrap();
        for i in 0..150 {
            let m = mutate(&text, &mut rng);
            let name = format!("{}#{i}", input.file_name().unwrap().to_string_lossy());
            let result =
                std::panic::catch_unwind(|| compile_str(&name, &m, &CompileOptions::default()));
            match result {
                Ok(Ok(_)) => accepted += 1,
                Ok(Err(e)) => {
                    refused += 1;
                    for err in &e.0 {
                        assert!(err.location.line >= 1 && err.location.column >= 1, "{err}");
                        assert!(err.to_string().starts_with(&format!("{name}:")), "{err}");
                    }
                }
                Err(_) => panic!("the front end panicked on mutation {name}:\n{m}"),
            }
        }
    }
    // The mutations exercise both outcomes.
    assert!(
        refused > 100 && accepted > 100,
        "refused {refused}, accepted {accepted}"
    );
}
