//! Benchmarks of the protocol core over in-memory buffers.
//!
//! `cargo bench -p wsbus-proto` (about two minutes; `-- --quick` for a rough
//! pass, `-- mask` to run only the groups whose name contains `mask`).
//!
//! * `frame_header`: parsing and encoding headers of each length encoding.
//! * `mask`: the word-at-a-time `apply_mask` against the byte-wise reference.
//! * `utf8`: the incremental validator, whole and in 100-byte pieces (a code
//!   point split between pieces on every multi-byte boundary).
//! * `receive`: a client's encoded text messages through a server's
//!   `handle_read` / `poll_event` (unmasking, UTF-8, framing); throughput is
//!   wire bytes.
//! * `deflate`: a client→server round trip of 1 KiB JSON-like messages with
//!   permessage-deflate (compress, frame, mask, unmask, inflate, validate);
//!   throughput is uncompressed bytes.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsbus_proto::frame::{FrameHeader, OpCode};
use wsbus_proto::mask::{apply_mask, apply_mask_bytewise};
use wsbus_proto::utf8::Utf8Validator;
use wsbus_proto::{
    Connection, DeflateConfig, DeflateParams, Event, Limits, MaskKeySource, Message, Utf8Bytes,
};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn masks() -> Box<dyn MaskKeySource> {
    let mut n: u32 = 0x1234_5678;
    Box::new(move || {
        n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        n.to_le_bytes()
    })
}

fn header(payload_len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
    FrameHeader {
        fin: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::BINARY,
        mask,
        payload_len,
    }
}

fn frame_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header");
    let cases = [
        ("7-bit", header(100, None)),
        ("16-bit masked", header(1000, Some(KEY))),
        ("64-bit masked", header(100_000, Some(KEY))),
    ];
    for (name, h) in cases {
        let mut encoded = Vec::new();
        h.encode(&mut encoded);
        assert_eq!(
            FrameHeader::decode(&encoded).unwrap(),
            Some((h, encoded.len()))
        );
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| FrameHeader::decode(black_box(&encoded)))
        });
        let mut out = Vec::with_capacity(16);
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                out.clear();
                black_box(&h).encode(&mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [16, 1024, 64 * 1024] {
        let mut buf: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("apply_mask", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), KEY, 0))
        });
        group.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), KEY, 0))
        });
    }
    group.finish();
}

/// `len` bytes (at most) of text made of `unit`, cut on a character boundary.
fn text_of(unit: &str, len: usize) -> String {
    let mut s = unit.repeat(len / unit.len() + 1);
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let ascii = r#"{"user":"ana","text":"hello world","n":12345},"#;
    // 2-, 3- and 4-byte sequences mixed with ASCII.
    let multibyte = "κόσμε, 日本語のテキスト 😀 ünïcödé ";
    for (kind, unit) in [("ascii", ascii), ("multibyte", multibyte)] {
        for size in [1024, 64 * 1024] {
            let text = text_of(unit, size);
            let bytes = text.as_bytes();
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            let id = format!("{kind}/{size}");
            group.bench_function(BenchmarkId::new("whole", &id), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(bytes)).unwrap();
                    v.finish().unwrap();
                })
            });
            group.bench_function(BenchmarkId::new("100-byte pieces", &id), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    for piece in black_box(bytes).chunks(100) {
                        v.feed(piece).unwrap();
                    }
                    v.finish().unwrap();
                })
            });
        }
    }
    group.finish();
}

/// Move everything `conn` queued to the end of `wire`.
fn drain_into(conn: &mut Connection, wire: &mut BytesMut) {
    let out = conn.outgoing();
    while !out.is_empty() {
        let n = out.chunk().len();
        wire.extend_from_slice(out.chunk());
        out.advance(n);
    }
}

/// Run a server over `wire` and return the number of messages it delivered.
fn receive_all(server: &mut Connection, buf: &mut BytesMut) -> usize {
    let mut messages = 0;
    loop {
        let more = server.handle_read(buf);
        while let Some(event) = server.poll_event() {
            match event {
                Event::Message(m) => {
                    black_box(m);
                    messages += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if !more {
            return messages;
        }
    }
}

fn receive(c: &mut Criterion) {
    let mut group = c.benchmark_group("receive");
    // About 1 MiB of wire per iteration at 64 KiB, less for the small sizes.
    for (size, count) in [(20, 1000), (1024, 256), (64 * 1024, 16)] {
        let text = Utf8Bytes::from(text_of(r#"{"k":"value","n":42},"#, size));
        assert_eq!(text.len(), size);
        let mut client = Connection::client(Limits::default(), masks());
        let mut wire = BytesMut::new();
        for _ in 0..count {
            client.send(Message::Text(text.clone())).unwrap();
        }
        drain_into(&mut client, &mut wire);
        let wire = wire.freeze();
        assert_eq!(
            receive_all(
                &mut Connection::server(Limits::default()),
                &mut BytesMut::from(&wire[..])
            ),
            count
        );
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let id = format!("{count}x{size}B text");
        let mut buf = BytesMut::with_capacity(wire.len());
        group.bench_function(BenchmarkId::new("server", id), |b| {
            b.iter(|| {
                // The copy stands in for the transport's read into the buffer.
                buf.clear();
                buf.extend_from_slice(&wire);
                let mut server = Connection::server(Limits::default());
                receive_all(&mut server, &mut buf)
            })
        });
    }
    group.finish();
}

/// 64 different ~1 KiB JSON documents, so that context takeover sees
/// realistic repetition rather than the same message again.
fn json_messages() -> Vec<String> {
    (0..64)
        .map(|i| {
            let mut s = String::from("[");
            let mut j = 0;
            while s.len() < 1000 {
                if j > 0 {
                    s.push(',');
                }
                s.push_str(&format!(
                    r#"{{"id":{},"user":"user{}","channel":"/chat/room-{}","ts":{},"text":"message {} of {}","ok":{}}}"#,
                    i * 100 + j,
                    (i * 7 + j) % 50,
                    i % 5,
                    1_700_000_000_000u64 + (i * 977 + j * 13) as u64,
                    j,
                    i,
                    (i + j) % 3 == 0
                ));
                j += 1;
            }
            s.push(']');
            s
        })
        .collect()
}

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    let messages = json_messages();
    let average = messages.iter().map(String::len).sum::<usize>() / messages.len();
    let variants = [
        ("context takeover", DeflateParams::default()),
        (
            "no context takeover",
            DeflateParams {
                client_no_context_takeover: true,
                server_no_context_takeover: true,
                ..DeflateParams::default()
            },
        ),
    ];
    for (name, params) in variants {
        let config = DeflateConfig::default();
        let mut client =
            Connection::client(Limits::default(), masks()).with_deflate(&params, &config);
        let mut server = Connection::server(Limits::default()).with_deflate(&params, &config);
        let mut buf = BytesMut::new();
        let mut wire_bytes = 0;
        for text in &messages {
            client.send_text(text.clone()).unwrap();
            drain_into(&mut client, &mut buf);
            wire_bytes += buf.len();
            server.handle_read(&mut buf);
            match server.poll_event() {
                Some(Event::Message(Message::Text(t))) => assert_eq!(t.as_str(), text),
                other => panic!("unexpected {other:?}"),
            }
        }
        eprintln!(
            "deflate/{name}: {} bytes of JSON per message on average, {} on the wire",
            average,
            wire_bytes / messages.len()
        );
        let texts: Vec<Utf8Bytes> = messages.iter().cloned().map(Utf8Bytes::from).collect();
        let mut next = 0;
        group.throughput(Throughput::Bytes(average as u64));
        group.bench_function(BenchmarkId::new("1KiB JSON round trip", name), |b| {
            b.iter(|| {
                client.send(Message::Text(texts[next].clone())).unwrap();
                next = (next + 1) % texts.len();
                drain_into(&mut client, &mut buf);
                server.handle_read(&mut buf);
                black_box(server.poll_event())
            })
        });
    }
    group.finish();
}

// criterion's macros define undocumented `pub fn`s.
#[allow(missing_docs)]
mod entry {
    use super::*;
    criterion_group! {
        name = benches;
        config = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        targets = frame_header, mask, utf8, receive, deflate
    }
}
criterion_main!(entry::benches);
