//! The connection state machine, driven in memory: a client and a server
//! `Connection` joined by byte pipes, plus hand-made frames for the faults a
//! well-behaved peer never sends.

use bytes::{BufMut, Bytes, BytesMut};
use wsbus_proto::frame::{FrameHeader, OpCode};
use wsbus_proto::{
    ApiError, CloseCode, CloseFrame, Connection, DeflateConfig, DeflateParams, Event, Limits,
    Message, ProtocolError, State,
};
use wsbus_test_support::deflate::deflate_bomb_1_gib;
use wsbus_test_support::frame::{FrameBits, encode};

fn masks() -> Box<dyn wsbus_proto::MaskKeySource> {
    let mut n: u32 = 0x1234_5678;
    Box::new(move || {
        n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        n.to_le_bytes()
    })
}

/// A client and a server joined in memory.
struct Pair {
    client: Connection,
    server: Connection,
    to_server: BytesMut,
    to_client: BytesMut,
}

impl Pair {
    fn new(limits: Limits, deflate: Option<(DeflateParams, DeflateConfig)>) -> Self {
        let mut client = Connection::client(limits, masks());
        let mut server = Connection::server(limits);
        if let Some((params, config)) = &deflate {
            client = client.with_deflate(params, config);
            server = server.with_deflate(params, config);
        }
        Pair {
            client,
            server,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
        }
    }

    fn plain() -> Self {
        Self::new(Limits::default(), None)
    }

    /// Move queued bytes across, `chunk` bytes at a time, and collect the
    /// events each side saw.
    fn pump(&mut self, chunk: usize) -> (Vec<Event>, Vec<Event>) {
        let mut server_events = Vec::new();
        let mut client_events = Vec::new();
        loop {
            let moved = transfer(
                &mut self.client,
                &mut self.server,
                &mut self.to_server,
                chunk,
                &mut server_events,
            ) | transfer(
                &mut self.server,
                &mut self.client,
                &mut self.to_client,
                chunk,
                &mut client_events,
            );
            if !moved {
                return (server_events, client_events);
            }
        }
    }
}

/// Write everything `from` queued into `to`'s read buffer, `chunk` bytes per
/// `handle_read`. Returns whether any byte moved.
fn transfer(
    from: &mut Connection,
    to: &mut Connection,
    buf: &mut BytesMut,
    chunk: usize,
    events: &mut Vec<Event>,
) -> bool {
    let out = from.outgoing();
    let mut wire = Vec::new();
    while !out.is_empty() {
        let piece = out.chunk().to_vec();
        out.advance(piece.len());
        wire.extend_from_slice(&piece);
    }
    for piece in wire.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let more = to.handle_read(buf);
            events.extend(std::iter::from_fn(|| to.poll_event()));
            if !more {
                break;
            }
        }
    }
    !wire.is_empty()
}

fn messages(events: &[Event]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn text_and_binary_both_ways_at_every_read_size() {
    for chunk in [1, 2, 3, 7, 64, usize::MAX] {
        let mut pair = Pair::plain();
        let big = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<_>>());
        pair.client.send_text("héllo wörld ☃").unwrap();
        pair.client.send_binary(big.clone()).unwrap();
        pair.client.send_text("").unwrap();
        pair.server.send_text("from server").unwrap();
        let (at_server, at_client) = pair.pump(chunk);
        assert_eq!(
            messages(&at_server),
            [
                Message::text("héllo wörld ☃"),
                Message::Binary(big),
                Message::text("")
            ],
            "chunk {chunk}"
        );
        assert_eq!(messages(&at_client), [Message::text("from server")]);
    }
}

#[test]
fn fragments_reassemble_with_control_frames_between() {
    let mut pair = Pair::plain();
    let text = "κόσμε".repeat(50); // a code point split across fragments
    pair.client
        .send_fragmented(Message::text(text.clone()), 7)
        .unwrap();
    let (at_server, _) = pair.pump(usize::MAX);
    assert_eq!(messages(&at_server), [Message::text(text)]);

    // A ping between two fragments is answered at once (§5.4, §5.5.2).
    let mut pair = Pair::plain();
    let mut wire = BytesMut::new();
    client_frame(&mut wire, OpCode::TEXT, false, b"frag");
    client_frame(&mut wire, OpCode::PING, true, b"p");
    client_frame(&mut wire, OpCode::CONTINUATION, true, b"ment");
    let events = feed_server(&mut pair.server, &wire, usize::MAX);
    assert_eq!(
        events,
        [
            Event::Ping(Bytes::from_static(b"p")),
            Event::Message(Message::text("fragment"))
        ]
    );
    assert_eq!(
        server_frames(&mut pair.server),
        [(OpCode::PONG, Bytes::from_static(b"p"))]
    );
}

fn deflate_pair(params: DeflateParams) -> Pair {
    let config = DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    };
    Pair::new(Limits::default(), Some((params, config)))
}

#[test]
fn compressed_messages_with_and_without_context_takeover() {
    let variants = [
        DeflateParams::default(),
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        },
        DeflateParams {
            server_max_window_bits: Some(9),
            client_max_window_bits: Some(10),
            ..DeflateParams::default()
        },
        DeflateParams {
            server_max_window_bits: Some(8),
            ..DeflateParams::default()
        },
    ];
    for params in variants {
        for chunk in [1, 5, usize::MAX] {
            let mut pair = deflate_pair(params.clone());
            let json =
                r#"{"channel":"/chat/room","data":{"user":"ana","text":"hello hello hello"}}"#
                    .repeat(20);
            for _ in 0..3 {
                pair.client.send_text(json.clone()).unwrap();
                pair.server.send_text(json.clone()).unwrap();
            }
            pair.client
                .send_fragmented(Message::binary(vec![1u8; 5000]), 100)
                .unwrap();
            pair.client.send_text("").unwrap();
            let (at_server, at_client) = pair.pump(chunk);
            let sent = Message::text(json.clone());
            assert_eq!(
                messages(&at_server),
                [
                    sent.clone(),
                    sent.clone(),
                    sent.clone(),
                    Message::binary(vec![1u8; 5000]),
                    Message::text("")
                ],
                "{params:?} chunk {chunk}"
            );
            assert_eq!(
                messages(&at_client),
                [sent.clone(), sent.clone(), sent],
                "{params:?}"
            );
        }
    }
}

#[test]
fn ping_is_answered_with_the_same_payload_and_pong_is_reported() {
    let mut pair = Pair::plain();
    pair.client.ping(&b"are you there"[..]).unwrap();
    pair.server.pong(&b"unsolicited"[..]).unwrap();
    let (at_server, at_client) = pair.pump(usize::MAX);
    assert_eq!(
        at_server,
        [Event::Ping(Bytes::from_static(b"are you there"))]
    );
    assert_eq!(
        at_client,
        [
            Event::Pong(Bytes::from_static(b"unsolicited")),
            Event::Pong(Bytes::from_static(b"are you there"))
        ]
    );
    assert_eq!(
        pair.client.ping(vec![0u8; 126]),
        Err(ApiError::ControlPayloadTooLong(126))
    );
}

#[test]
fn closing_handshake_echoes_the_code_and_ends_closed() {
    let mut pair = Pair::plain();
    pair.client.close(CloseCode(4000), "done").unwrap();
    assert_eq!(pair.client.state(), State::Closing);
    assert_eq!(pair.client.send_text("late"), Err(ApiError::NotOpen));
    let (at_server, at_client) = pair.pump(usize::MAX);
    assert_eq!(
        at_server,
        [Event::Close(Some(CloseFrame::new(CloseCode(4000), "done")))]
    );
    assert_eq!(
        at_client,
        [Event::Close(Some(CloseFrame::new(CloseCode(4000), "")))]
    );
    assert_eq!(pair.server.state(), State::Closed);
    assert_eq!(pair.client.state(), State::Closed);
    assert_eq!(pair.server.close_status(), Some(CloseCode(4000)));
    // Nothing is sent after a close.
    assert_eq!(pair.server.send_text("late"), Err(ApiError::NotOpen));
    assert_eq!(pair.server.ping(Bytes::new()), Err(ApiError::NotOpen));
}

#[test]
fn empty_close_is_reported_as_1005_and_eof_as_1006() {
    let mut server = Connection::server(Limits::default());
    let mut wire = BytesMut::new();
    client_frame(&mut wire, OpCode::CLOSE, true, b"");
    assert_eq!(
        feed_server(&mut server, &wire, usize::MAX),
        [Event::Close(None)]
    );
    assert_eq!(server.close_status(), Some(CloseCode::NO_STATUS_RECEIVED));
    assert_eq!(server_frames(&mut server), [(OpCode::CLOSE, Bytes::new())]);

    let mut server = Connection::server(Limits::default());
    server.handle_eof();
    assert_eq!(server.close_status(), Some(CloseCode::ABNORMAL));
    assert_eq!(server.state(), State::Closed);
}

#[test]
fn web_api_close_rules_for_the_client() {
    let mut client = Connection::client(Limits::default(), masks());
    assert_eq!(
        client.close(CloseCode::GOING_AWAY, ""),
        Err(ApiError::InvalidCloseCode(1001))
    );
    assert_eq!(
        client.close(CloseCode(2999), ""),
        Err(ApiError::InvalidCloseCode(2999))
    );
    assert_eq!(
        client.close(CloseCode(5000), ""),
        Err(ApiError::InvalidCloseCode(5000))
    );
    assert_eq!(
        client.close(CloseCode::NORMAL, &"x".repeat(124)),
        Err(ApiError::CloseReasonTooLong(124))
    );
    assert_eq!(client.state(), State::Open);
    client.close(CloseCode::NORMAL, &"é".repeat(61)).unwrap();
    assert_eq!(client.close(CloseCode::NORMAL, ""), Err(ApiError::NotOpen));

    let mut server = Connection::server(Limits::default());
    assert_eq!(
        server.close(CloseCode::ABNORMAL, ""),
        Err(ApiError::InvalidCloseCode(1006))
    );
    server
        .close(CloseCode::GOING_AWAY, "shutting down")
        .unwrap();
}

/// Append a masked client frame.
fn client_frame(wire: &mut BytesMut, opcode: OpCode, fin: bool, payload: &[u8]) {
    raw_frame(
        wire,
        opcode,
        fin,
        false,
        Some([0xa1, 0xb2, 0xc3, 0xd4]),
        payload,
    );
}

/// Append a frame with every bit chosen, encoded by the test-support crate
/// (not by the encoder under test).
fn raw_frame(
    wire: &mut BytesMut,
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    let bits = FrameBits {
        fin,
        rsv1,
        opcode: opcode.0,
        mask,
    };
    wire.put_slice(&encode(bits, payload));
}

fn feed_server(server: &mut Connection, wire: &[u8], chunk: usize) -> Vec<Event> {
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in wire.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let more = server.handle_read(&mut buf);
            events.extend(std::iter::from_fn(|| server.poll_event()));
            if !more {
                break;
            }
        }
    }
    events
}

/// Decode the (unmasked) frames a server queued.
fn server_frames(server: &mut Connection) -> Vec<(OpCode, Bytes)> {
    let out = server.outgoing();
    let mut wire = Vec::new();
    while !out.is_empty() {
        let piece = out.chunk().to_vec();
        out.advance(piece.len());
        wire.extend_from_slice(&piece);
    }
    let mut frames = Vec::new();
    let mut rest = &wire[..];
    while let Some((header, len)) = FrameHeader::decode(rest).unwrap() {
        assert!(header.mask.is_none(), "server frames are never masked");
        let end = len + header.payload_len as usize;
        frames.push((header.opcode, Bytes::copy_from_slice(&rest[len..end])));
        rest = &rest[end..];
    }
    frames
}

/// Feed `wire` to a fresh server and check that it fails with `code`, answers
/// with exactly one close frame carrying that code, and stops.
fn assert_fails_with(limits: Limits, deflate: bool, wire: &[u8], code: CloseCode) -> ProtocolError {
    for chunk in [1, usize::MAX] {
        let mut server = Connection::server(limits);
        if deflate {
            server = server.with_deflate(&DeflateParams::default(), &DeflateConfig::default());
        }
        let events = feed_server(&mut server, wire, chunk);
        let Some(Event::Error(err)) = events.last() else {
            panic!("expected an error, got {events:?}");
        };
        assert_eq!(err.close_code(), code, "{err}");
        assert_eq!(server.state(), State::Closed);
        assert_eq!(server.close_status(), Some(code));
        let frames = server_frames(&mut server);
        let (opcode, payload) = frames.last().expect("a close frame");
        assert_eq!(*opcode, OpCode::CLOSE);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code.0);
        // Further input is ignored.
        let mut more = BytesMut::from(&b"\x81\x85garbage"[..]);
        assert!(!server.handle_read(&mut more));
        assert_eq!(server.poll_event(), None);
        if chunk == usize::MAX {
            return err.clone();
        }
    }
    unreachable!()
}

#[test]
fn protocol_violations_close_with_1002() {
    let limits = Limits::default();
    let cases: Vec<(&str, BytesMut, bool)> = vec![
        (
            "reserved opcode 3",
            frame_bytes(|w| client_frame(w, OpCode(3), true, b"")),
            false,
        ),
        (
            "reserved opcode 0xB",
            frame_bytes(|w| client_frame(w, OpCode(0xB), true, b"")),
            false,
        ),
        (
            "RSV1 without deflate",
            frame_bytes(|w| raw_frame(w, OpCode::TEXT, true, true, Some([1, 2, 3, 4]), b"x")),
            false,
        ),
        (
            "RSV2",
            frame_bytes(|w| w.put_slice(&[0xA1, 0x80, 0, 0, 0, 0])),
            false,
        ),
        (
            "RSV3",
            frame_bytes(|w| w.put_slice(&[0x91, 0x80, 0, 0, 0, 0])),
            false,
        ),
        (
            "RSV1 on a continuation",
            frame_bytes(|w| {
                raw_frame(w, OpCode::TEXT, false, false, Some([1, 2, 3, 4]), b"a");
                raw_frame(
                    w,
                    OpCode::CONTINUATION,
                    true,
                    true,
                    Some([1, 2, 3, 4]),
                    b"b",
                );
            }),
            true,
        ),
        (
            "RSV1 on a ping",
            frame_bytes(|w| raw_frame(w, OpCode::PING, true, true, Some([1, 2, 3, 4]), b"")),
            true,
        ),
        (
            "unmasked client frame",
            frame_bytes(|w| raw_frame(w, OpCode::TEXT, true, false, None, b"hi")),
            false,
        ),
        (
            "ping over 125 bytes",
            frame_bytes(|w| client_frame(w, OpCode::PING, true, &[0; 126])),
            false,
        ),
        (
            "fragmented ping",
            frame_bytes(|w| client_frame(w, OpCode::PING, false, b"")),
            false,
        ),
        (
            "continuation first",
            frame_bytes(|w| client_frame(w, OpCode::CONTINUATION, true, b"x")),
            false,
        ),
        (
            "new message inside a fragmented one",
            frame_bytes(|w| {
                client_frame(w, OpCode::TEXT, false, b"a");
                client_frame(w, OpCode::BINARY, true, b"b");
            }),
            false,
        ),
        (
            "1-byte close",
            frame_bytes(|w| client_frame(w, OpCode::CLOSE, true, &[3])),
            false,
        ),
        (
            "close code 999",
            frame_bytes(|w| client_frame(w, OpCode::CLOSE, true, &999u16.to_be_bytes())),
            false,
        ),
        (
            "close code 1005",
            frame_bytes(|w| client_frame(w, OpCode::CLOSE, true, &1005u16.to_be_bytes())),
            false,
        ),
        (
            "close code 1006",
            frame_bytes(|w| client_frame(w, OpCode::CLOSE, true, &1006u16.to_be_bytes())),
            false,
        ),
        (
            "close code 1015",
            frame_bytes(|w| client_frame(w, OpCode::CLOSE, true, &1015u16.to_be_bytes())),
            false,
        ),
        (
            "close code 2999",
            frame_bytes(|w| client_frame(w, OpCode::CLOSE, true, &2999u16.to_be_bytes())),
            false,
        ),
        (
            "close code 5000",
            frame_bytes(|w| client_frame(w, OpCode::CLOSE, true, &5000u16.to_be_bytes())),
            false,
        ),
        (
            "64-bit length MSB",
            frame_bytes(|w| w.put_slice(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1])),
            false,
        ),
        (
            "invalid deflate data",
            frame_bytes(|w| {
                raw_frame(
                    w,
                    OpCode::BINARY,
                    true,
                    true,
                    Some([1, 2, 3, 4]),
                    &[0xFF; 16],
                )
            }),
            true,
        ),
    ];
    for (name, wire, deflate) in cases {
        let err = assert_fails_with(limits, deflate, &wire, CloseCode::PROTOCOL_ERROR);
        eprintln!("{name}: {err}");
    }
}

#[test]
fn client_rejects_masked_server_frames() {
    let mut client = Connection::client(Limits::default(), masks());
    let mut wire =
        frame_bytes(|w| raw_frame(w, OpCode::TEXT, true, false, Some([1, 2, 3, 4]), b"hi"));
    client.handle_read(&mut wire);
    assert_eq!(
        client.poll_event(),
        Some(Event::Error(ProtocolError::MaskedServerFrame))
    );
    assert_eq!(client.close_status(), Some(CloseCode::PROTOCOL_ERROR));
}

fn frame_bytes(build: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut wire = BytesMut::new();
    build(&mut wire);
    wire
}

#[test]
fn invalid_utf8_closes_with_1007_as_soon_as_it_is_seen() {
    let bad = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
    let wire = frame_bytes(|w| client_frame(w, OpCode::TEXT, true, bad));
    assert_fails_with(Limits::default(), false, &wire, CloseCode::INVALID_PAYLOAD);
    // Fail fast: the frame's first 13 bytes already prove it invalid.
    let mut server = Connection::server(Limits::default());
    let events = feed_server(&mut server, &wire[..6 + 13], usize::MAX);
    assert_eq!(events, [Event::Error(ProtocolError::InvalidUtf8)]);
    // Split across fragments.
    let wire = frame_bytes(|w| {
        client_frame(w, OpCode::TEXT, false, &bad[..12]);
        client_frame(w, OpCode::CONTINUATION, true, &bad[12..]);
    });
    assert_fails_with(Limits::default(), false, &wire, CloseCode::INVALID_PAYLOAD);
    // A truncated code point at the end of the message.
    let wire = frame_bytes(|w| client_frame(w, OpCode::TEXT, true, b"ok\xe2\x82"));
    assert_fails_with(Limits::default(), false, &wire, CloseCode::INVALID_PAYLOAD);
    // An invalid close reason.
    let wire = frame_bytes(|w| client_frame(w, OpCode::CLOSE, true, b"\x03\xe8\xff"));
    assert_fails_with(Limits::default(), false, &wire, CloseCode::INVALID_PAYLOAD);
}

#[test]
fn limits_close_with_1009_before_buffering() {
    let limits = Limits {
        max_frame_size: 1000,
        max_message_size: 1500,
        max_inflated_size: 2000,
    };
    // Only the header is sent: the declared length alone is enough.
    let wire = frame_bytes(|w| w.put_slice(&[0x82, 0xFE, 0x03, 0xE9, 1, 2, 3, 4]));
    let err = assert_fails_with(limits, false, &wire, CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(err, ProtocolError::FrameTooLarge { limit: 1000 });

    let wire = frame_bytes(|w| {
        client_frame(w, OpCode::BINARY, false, &[0; 1000]);
        client_frame(w, OpCode::CONTINUATION, true, &[0; 501]);
    });
    let err = assert_fails_with(limits, false, &wire, CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(err, ProtocolError::MessageTooLarge { limit: 1500 });

    let mut sender = Connection::client(Limits::default(), masks())
        .with_deflate(&DeflateParams::default(), &DeflateConfig::default());
    sender.send_binary(vec![0u8; 2001]).unwrap();
    let mut wire = Vec::new();
    while !sender.outgoing().is_empty() {
        let piece = sender.outgoing().chunk().to_vec();
        sender.outgoing().advance(piece.len());
        wire.extend_from_slice(&piece);
    }
    let err = assert_fails_with(limits, true, &wire, CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(err, ProtocolError::InflatedTooLarge { limit: 2000 });
}

#[test]
fn decompression_bomb_stops_at_the_inflated_limit() {
    let bomb = deflate_bomb_1_gib();
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let limits = Limits {
        max_frame_size: 4 << 20,
        max_message_size: 4 << 20,
        max_inflated_size: 16 << 20,
    };
    let wire = frame_bytes(|w| raw_frame(w, OpCode::BINARY, true, true, Some([9, 8, 7, 6]), &bomb));
    let mut server = Connection::server(limits)
        .with_deflate(&DeflateParams::default(), &DeflateConfig::default());
    let events = feed_server(&mut server, &wire, 64 * 1024);
    assert_eq!(
        events,
        [Event::Error(ProtocolError::InflatedTooLarge {
            limit: 16 << 20
        })]
    );
    assert_eq!(server.close_status(), Some(CloseCode::MESSAGE_TOO_BIG));
}

#[test]
fn one_byte_at_a_time_still_works() {
    let mut wire = BytesMut::new();
    client_frame(&mut wire, OpCode::TEXT, true, "a 😀 b".as_bytes());
    client_frame(&mut wire, OpCode::BINARY, true, &[0u8; 300]);
    client_frame(&mut wire, OpCode::PING, true, b"x");
    client_frame(&mut wire, OpCode::CLOSE, true, &1000u16.to_be_bytes());
    let mut server = Connection::server(Limits::default());
    let events = feed_server(&mut server, &wire, 1);
    assert_eq!(
        events,
        [
            Event::Message(Message::text("a 😀 b")),
            Event::Message(Message::binary(vec![0u8; 300])),
            Event::Ping(Bytes::from_static(b"x")),
            Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))),
        ]
    );
}

#[test]
fn prepared_message_is_shared_by_plain_connections() {
    let text = "to everyone, to everyone, to everyone, to everyone";
    let prepared = wsbus_proto::PreparedMessage::new(Message::text(text));
    let mut a = Connection::server(Limits::default());
    let mut b = Connection::server(Limits::default())
        .with_deflate(&DeflateParams::default(), &DeflateConfig::default());
    a.send_prepared(&prepared).unwrap();
    b.send_prepared(&prepared).unwrap();
    assert_eq!(
        server_frames(&mut a),
        [(OpCode::TEXT, Bytes::from_static(text.as_bytes()))]
    );
    // The deflate connection compressed its own copy (RSV1 set): check it by
    // decoding the header only.
    assert_eq!(b.outgoing().chunk()[0] & 0x40, 0x40);
}

#[test]
fn data_after_a_final_deflate_block_is_ignored_however_reads_split() {
    // "Hello" as a final (BFINAL) DEFLATE block, then a stray byte; found by
    // the frame_decoder_server fuzzer (the verdict depended on read splits).
    let payload = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xff];
    let wire =
        frame_bytes(|w| raw_frame(w, OpCode::TEXT, true, true, Some([1, 2, 3, 4]), &payload));
    for split in 1..wire.len() {
        let mut server = Connection::server(Limits::default())
            .with_deflate(&DeflateParams::default(), &DeflateConfig::default());
        let mut buf = BytesMut::from(&wire[..split]);
        let mut events = Vec::new();
        for piece in [&wire[split..], &[][..]] {
            loop {
                let more = server.handle_read(&mut buf);
                events.extend(std::iter::from_fn(|| server.poll_event()));
                if !more {
                    break;
                }
            }
            buf.extend_from_slice(piece);
        }
        assert_eq!(
            events,
            [Event::Message(Message::text("Hello"))],
            "split at {split}"
        );
    }
}

#[test]
fn a_frame_in_progress_says_how_many_bytes_it_still_wants() {
    let mut server = Connection::server(Limits::default());
    let mut wire = BytesMut::new();
    client_frame(&mut wire, OpCode::BINARY, true, &vec![7u8; 65_536]);
    let header_len = wire.len() - 65_536;
    assert_eq!(server.frame_bytes_wanted(0), 0, "between frames");

    // The header and the first 1,000 payload bytes arrive.
    let mut buf = wire.split_to(header_len + 1_000);
    assert!(!server.handle_read(&mut buf));
    assert_eq!(server.frame_bytes_wanted(buf.len()), 65_536 - 1_000);

    // The rest arrives: the message is whole, the next frame not begun.
    buf.extend_from_slice(&wire);
    assert!(server.handle_read(&mut buf));
    assert!(matches!(server.poll_event(), Some(Event::Message(m)) if m.payload().len() == 65_536));
    assert_eq!(server.frame_bytes_wanted(buf.len()), 0);
}
