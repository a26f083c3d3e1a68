//! The fuzz targets on stable Rust, for CI: every file in `corpus/<target>/`
//! (the committed `seed-*` files, plus whatever a local fuzzing run added),
//! then deterministic mutations of the seeds (xorshift, fixed seed), through
//! the same functions the cargo-fuzz targets call.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml --release`
//!
//! * `WSBUS_FUZZ_ITERATIONS` — mutations per target (default 3000).
//! * `WSBUS_FUZZ_SEED` — the xorshift seed (default fixed), to explore further.
//!
//! A failing input is written to `artifacts/<target>/smoke-<hash>` (ignored by
//! git) and named in the panic message; replay it with
//! `cargo fuzz run <target> <file>`, or here by copying it into
//! `corpus/<target>/`.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const DEFAULT_ITERATIONS: usize = 3000;

#[test]
fn frame_decoder_server() {
    smoke(
        "frame_decoder_server",
        wsbus_proto_fuzz::frame_decoder_server,
    );
}

#[test]
fn frame_decoder_client() {
    smoke(
        "frame_decoder_client",
        wsbus_proto_fuzz::frame_decoder_client,
    );
}

#[test]
fn handshake_request() {
    smoke("handshake_request", wsbus_proto_fuzz::handshake_request);
}

#[test]
fn inflate() {
    smoke("inflate", wsbus_proto_fuzz::inflate);
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

fn smoke(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = load_corpus(&root.join("corpus").join(target));
    assert!(
        corpus.iter().any(|(path, _)| is_seed(path)),
        "no seed-* files in corpus/{target}: run fuzz/make_seeds.py"
    );
    for (path, input) in &corpus {
        check(root, target, run, input, &path.display().to_string());
    }

    let iterations = env_number("WSBUS_FUZZ_ITERATIONS").map_or(DEFAULT_ITERATIONS, |n| n as usize);
    let seed = env_number("WSBUS_FUZZ_SEED").unwrap_or(0x5EED_C0FF_EE00_0001);
    let mut rng = XorShift((seed ^ fnv1a(target.as_bytes())) | 1);
    let seeds: Vec<&[u8]> = corpus
        .iter()
        .filter(|(path, _)| is_seed(path))
        .map(|(_, input)| &input[..])
        .collect();
    for i in 0..iterations {
        let base = seeds[rng.below(seeds.len())];
        let other = seeds[rng.below(seeds.len())];
        let input = mutate(base, other, &mut rng);
        check(root, target, run, &input, &format!("mutation {i}"));
    }
}

fn is_seed(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("seed-"))
}

fn load_corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Run one input; on a panic, save it and fail with its name and bytes.
fn check(root: &Path, target: &str, run: fn(&[u8]), input: &[u8], what: &str) {
    if panic::catch_unwind(AssertUnwindSafe(|| run(input))).is_ok() {
        return;
    }
    let dir = root.join("artifacts").join(target);
    let file = dir.join(format!("smoke-{:016x}", fnv1a(input)));
    let saved = fs::create_dir_all(&dir)
        .and_then(|()| fs::write(&file, input))
        .map_or_else(
            |e| format!("(not saved: {e})"),
            |()| file.display().to_string(),
        );
    let shown = &input[..input.len().min(512)];
    panic!(
        "{target} failed on {what} ({} bytes), saved as {saved}\ninput: {shown:02x?}",
        input.len()
    );
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Values that sit on the boundaries of the frame format.
const INTERESTING: [u8; 12] = [
    0, 1, 0x7D, 0x7E, 0x7F, 0x80, 0x81, 0x82, 0x88, 0x89, 0xC1, 0xFF,
];

/// One to four libFuzzer-style edits, plus sometimes a splice with `other`.
fn mutate(base: &[u8], other: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut data = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                data.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                data.drain(i..i + n);
            }
            5 if len > 0 => {
                // Duplicate a range (repeats frames).
                let i = rng.below(len);
                let n = 1 + rng.below(len - i);
                let copy = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            6 if !other.is_empty() => {
                // Splice: our prefix, the other input's suffix.
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 if len > 0 => {
                data.truncate(rng.below(len));
            }
            // The option bytes (first two) steer the whole run.
            _ if len > 1 => {
                let i = rng.below(2);
                data[i] = rng.byte();
            }
            _ => data.push(rng.byte()),
        }
    }
    data
}
