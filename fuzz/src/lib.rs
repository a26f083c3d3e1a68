//! The logic of the wsbus-proto fuzz targets.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line wrapper around the function of
//! the same name here, so the same checks run under libFuzzer
//! (`cargo fuzz run <name>`) and in the stable smoke test `tests/seeds.rs`
//! (the committed seeds plus deterministic mutations).
//!
//! Every function panics when an invariant breaks: a panic is a bug, either in
//! wsbus-proto or in the invariant. The inputs are laid out so that the first
//! bytes choose the configuration and the rest is what the peer sends; see
//! [`Options::decode`] and [`inflate`].

#![forbid(unsafe_code)]

use std::io::IoSlice;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use flate2::{Decompress, FlushDecompress, Status};
use wsbus_proto::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use wsbus_proto::handshake::{
    self, ClientHandshake, ClientHandshakeError, ClientRequest, Rejection, RequestHead,
    UpgradeRequest,
};
use wsbus_proto::mask::apply_mask;
use wsbus_proto::{
    ApiError, CloseCode, Connection, DeflateConfig, DeflateParams, Event, Limits, MaskKeySource,
    Message, ProtocolError, Role, State,
};

/// The limits of the `frame_decoder_*` targets (unless the input asks for
/// [`SMALL_LIMITS`]).
pub const FUZZ_LIMITS: Limits = Limits {
    max_frame_size: 1 << 20,
    max_message_size: 1 << 20,
    max_inflated_size: 1 << 20,
};

/// Limits small enough for short inputs to reach every size check.
pub const SMALL_LIMITS: Limits = Limits {
    max_frame_size: 64,
    max_message_size: 256,
    max_inflated_size: 1024,
};

/// The close reason of a close the application starts (option bit 5).
const APP_CLOSE_REASON: &str = "bye";

/// The configuration of a `frame_decoder_*` run, read from the first two
/// bytes of the input; the rest of the input is the byte stream from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Byte 0, bit 0: permessage-deflate on; bits 1–2 pick the parameters
    /// (see [`deflate_variant`]). `DeflateConfig::default()` always.
    pub deflate: Option<DeflateParams>,
    /// Byte 0, bit 3: the application echoes every message it receives (the
    /// send path and the compressor run between reads).
    pub echo: bool,
    /// Byte 0, bit 4: [`SMALL_LIMITS`] instead of [`FUZZ_LIMITS`].
    pub limits: Limits,
    /// Byte 0, bit 5: the application starts the closing handshake before
    /// anything is read.
    pub close_first: bool,
    /// Byte 1: the size of each read (0: the whole stream in one read).
    pub read_size: usize,
    /// Bytes 0–1 also seed the client's masking keys.
    pub mask_seed: u32,
}

/// permessage-deflate parameters for a 2-bit selector: the RFC defaults, no
/// context takeover both ways, small windows, and the 8-bit window (the server
/// then sends uncompressed).
pub fn deflate_variant(selector: u8) -> DeflateParams {
    match selector & 3 {
        0 => DeflateParams::default(),
        1 => DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        },
        2 => DeflateParams {
            server_max_window_bits: Some(9),
            client_max_window_bits: Some(10),
            ..DeflateParams::default()
        },
        _ => DeflateParams {
            server_max_window_bits: Some(8),
            client_max_window_bits: Some(8),
            ..DeflateParams::default()
        },
    }
}

impl Options {
    /// Split an input into its options and the peer's byte stream. Missing
    /// option bytes count as 0, so every input is valid.
    pub fn decode(data: &[u8]) -> (Options, &[u8]) {
        let flags = data.first().copied().unwrap_or(0);
        let read = data.get(1).copied().unwrap_or(0);
        let options = Options {
            deflate: (flags & 1 != 0).then(|| deflate_variant(flags >> 1)),
            echo: flags & 0x08 != 0,
            limits: if flags & 0x10 != 0 {
                SMALL_LIMITS
            } else {
                FUZZ_LIMITS
            },
            close_first: flags & 0x20 != 0,
            read_size: if read == 0 {
                usize::MAX
            } else {
                usize::from(read)
            },
            mask_seed: u32::from(flags) << 8 | u32::from(read),
        };
        (options, data.get(2..).unwrap_or_default())
    }

    /// The largest message the connection may deliver.
    fn max_message(&self) -> usize {
        if self.deflate.is_some() {
            self.limits
                .max_message_size
                .max(self.limits.max_inflated_size)
        } else {
            self.limits.max_message_size
        }
    }
}

/// Deterministic masking keys (xorshift32): the state machine must not care
/// what the keys are.
pub fn mask_source(seed: u32) -> Box<dyn MaskKeySource> {
    let mut state = seed ^ 0x9E37_79B9;
    if state == 0 {
        state = 1;
    }
    Box::new(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state.to_le_bytes()
    })
}

fn new_connection(
    role: Role,
    limits: Limits,
    deflate: Option<&DeflateParams>,
    mask_seed: u32,
) -> Connection {
    let conn = match role {
        Role::Server => Connection::server(limits),
        Role::Client => Connection::client(limits, mask_source(mask_seed)),
    };
    assert_eq!(conn.role(), role);
    assert_eq!(conn.state(), State::Open);
    match deflate {
        Some(params) => {
            let conn = conn.with_deflate(params, &DeflateConfig::default());
            assert!(conn.is_compressed());
            conn
        }
        None => conn,
    }
}

/// `frame_decoder_server`: the bytes a client sends, read by a server.
pub fn frame_decoder_server(data: &[u8]) {
    frame_decoder(Role::Server, data);
}

/// `frame_decoder_client`: the bytes a server sends, read by a client.
pub fn frame_decoder_client(data: &[u8]) {
    frame_decoder(Role::Client, data);
}

/// Drive a connection over the input's byte stream and check that
///
/// * every event obeys the driving contract and the limits ([`drive`]);
/// * everything the connection queued is valid for its peer, and the messages
///   it echoed arrive intact ([`check_wire`]);
/// * the events do not depend on how the stream was split into reads.
pub fn frame_decoder(role: Role, data: &[u8]) {
    let (options, stream) = Options::decode(data);
    let run = drive(role, &options, stream, options.read_size);
    check_wire(role, &options, &run);
    if options.read_size < stream.len() {
        let whole = drive(role, &options, stream, usize::MAX);
        assert_same_events(&run.events, &whole.events, options.read_size);
    }
}

/// What one run of a connection over a byte stream produced.
#[derive(Debug, Default)]
pub struct Run {
    pub events: Vec<Event>,
    /// The messages echoed back (those `send` accepted), in order.
    pub echoed: Vec<Message>,
    /// Everything the connection queued, in order.
    pub wire: Vec<u8>,
}

/// Feed `stream` to a fresh connection in reads of `read_size` bytes,
/// following the driving contract, and check every step.
pub fn drive(role: Role, options: &Options, stream: &[u8], read_size: usize) -> Run {
    let mut conn = new_connection(
        role,
        options.limits,
        options.deflate.as_ref(),
        options.mask_seed,
    );
    let mut run = Run::default();
    let mut ended = false;
    if options.close_first {
        conn.close(CloseCode::NORMAL, APP_CLOSE_REASON)
            .expect("an open connection can start closing");
        assert_eq!(conn.state(), State::Closing);
        assert_eq!(conn.send_text("late"), Err(ApiError::NotOpen));
    }
    drain(&mut conn, &mut run.wire);

    let mut buf = BytesMut::new();
    for piece in stream.chunks(read_size.max(1)) {
        let queued_before = run.wire.len();
        buf.extend_from_slice(piece);
        loop {
            let more = conn.handle_read(&mut buf);
            let mut polled = 0;
            while let Some(event) = conn.poll_event() {
                polled += 1;
                check_event(&mut conn, &event, options, &mut ended);
                if options.echo
                    && let Event::Message(message) = &event
                    && conn.send(message.clone()).is_ok()
                {
                    run.echoed.push(message.clone());
                }
                run.events.push(event);
            }
            // "Stops after each frame that produced an event": one event per
            // `true`, none with `false`.
            assert_eq!(
                polled,
                usize::from(more),
                "handle_read returned {more} with {polled} events queued"
            );
            if !more {
                break;
            }
        }
        // A partial frame is all that may stay buffered: less than a header,
        // or less than one frame's payload (which the limits bound; control
        // frames may carry 125 bytes whatever the limits).
        let bound = (options.limits.max_frame_size as usize)
            .max(MAX_HEADER_LEN)
            .max(MAX_CONTROL_PAYLOAD);
        assert!(
            buf.len() <= bound,
            "{} bytes left buffered (bound {bound})",
            buf.len()
        );
        if ended {
            assert!(buf.is_empty(), "bytes kept after the connection ended");
        }
        drain(&mut conn, &mut run.wire);
        if !options.echo {
            // Without the application sending, output is pongs and one close:
            // a pong is at most 4 bytes (a mask) longer than the ping, and a
            // ping is at least 2 bytes.
            let queued = run.wire.len() - queued_before;
            assert!(
                queued <= 3 * piece.len() + 2 * (MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD),
                "a read of {} bytes queued {queued} bytes",
                piece.len()
            );
        }
    }

    if ended {
        assert_eq!(conn.state(), State::Closed);
        let mut late = BytesMut::from(&b"\x81\x85garbage"[..]);
        assert!(!conn.handle_read(&mut late), "input after the end");
        assert_eq!(conn.poll_event(), None);
        assert!(conn.outgoing().is_empty());
    } else {
        let expected = if options.close_first {
            State::Closing
        } else {
            State::Open
        };
        assert_eq!(conn.state(), expected);
        assert_eq!(conn.close_status(), None);
    }
    let status_before = conn.close_status();
    conn.handle_eof();
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(
        conn.close_status(),
        Some(status_before.unwrap_or(CloseCode::ABNORMAL))
    );
    run
}

fn check_event(conn: &mut Connection, event: &Event, options: &Options, ended: &mut bool) {
    assert!(!*ended, "{event:?} after the connection ended");
    match event {
        Event::Message(message) => {
            assert!(
                message.len() <= options.max_message(),
                "a message of {} bytes passed the limits {:?}",
                message.len(),
                options.limits
            );
            if let Message::Text(text) = message {
                assert!(
                    std::str::from_utf8(text.as_bytes()).is_ok(),
                    "text message is not UTF-8"
                );
            }
        }
        Event::Ping(payload) | Event::Pong(payload) => {
            assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        }
        Event::Close(frame) => {
            *ended = true;
            assert_eq!(conn.state(), State::Closed);
            let code = frame
                .as_ref()
                .map_or(CloseCode::NO_STATUS_RECEIVED, |f| f.code);
            assert_eq!(conn.close_status(), Some(code));
            if let Some(frame) = frame {
                assert!(frame.code.is_valid_on_wire(), "{frame:?}");
                assert!(frame.reason.len() <= 123, "{frame:?}");
            }
            assert_eq!(conn.send_text("late"), Err(ApiError::NotOpen));
        }
        Event::Error(err) => {
            *ended = true;
            assert_eq!(conn.state(), State::Closed, "after {err:?}");
            assert_eq!(conn.close_status(), Some(err.close_code()), "{err:?}");
            assert!(err.close_code().is_valid_on_wire(), "{err:?}");
            check_error_kind(conn.role(), options, err);
            assert_eq!(conn.send_text("late"), Err(ApiError::NotOpen));
        }
    }
}

/// Errors that cannot happen in this configuration.
fn check_error_kind(role: Role, options: &Options, err: &ProtocolError) {
    match err {
        ProtocolError::MaskedServerFrame => assert_eq!(role, Role::Client),
        ProtocolError::UnmaskedClientFrame => assert_eq!(role, Role::Server),
        ProtocolError::InflatedTooLarge { .. }
        | ProtocolError::InvalidDeflateData
        | ProtocolError::CompressedBitOnNonFirstFrame => {
            assert!(options.deflate.is_some(), "{err:?} without deflate")
        }
        ProtocolError::FrameAfterClose => panic!("{err:?}: nothing is read after a close"),
        _ => {}
    }
}

/// Write out everything queued, in partial writes of growing size, checking
/// that the vectored and the chunk-by-chunk views agree.
fn drain(conn: &mut Connection, wire: &mut Vec<u8>) {
    let out = conn.outgoing();
    let queued = out.len();
    assert_eq!(out.is_empty(), queued == 0);
    let mut slices = [IoSlice::new(&[]); 8];
    let filled = out.chunks_vectored(&mut slices);
    let vectored: Vec<u8> = slices[..filled]
        .iter()
        .flat_map(|s| s.iter().copied())
        .collect();
    if filled < slices.len() {
        assert_eq!(vectored.len(), queued, "chunks_vectored misses bytes");
    } else {
        assert!(vectored.len() <= queued);
    }
    let start = wire.len();
    let mut step = 1;
    while !out.is_empty() {
        let chunk = out.chunk();
        assert!(!chunk.is_empty(), "{} bytes queued, empty chunk", out.len());
        let take = chunk.len().min(step);
        wire.extend_from_slice(&chunk[..take]);
        out.advance(take);
        step = step.saturating_mul(4);
    }
    assert_eq!(out.len(), 0);
    assert_eq!(wire.len() - start, queued);
    assert_eq!(wire[start..start + vectored.len()], vectored[..]);
}

/// Everything `role` queued must be valid for its peer: complete frames,
/// masked the right way, compressed with a context the peer can follow; the
/// echoed messages must arrive as they were sent.
pub fn check_wire(role: Role, options: &Options, run: &Run) {
    let peer_role = match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let mut peer = new_connection(
        peer_role,
        Limits::default(),
        options.deflate.as_ref(),
        !options.mask_seed,
    );
    let mut buf = BytesMut::from(&run.wire[..]);
    let mut messages = Vec::new();
    loop {
        let more = peer.handle_read(&mut buf);
        while let Some(event) = peer.poll_event() {
            match event {
                Event::Error(err) => panic!("the {role:?}'s output fails its peer: {err:?}"),
                Event::Message(message) => messages.push(message),
                Event::Close(Some(frame)) if options.close_first => {
                    assert_eq!(frame.code, CloseCode::NORMAL);
                    assert_eq!(frame.reason, APP_CLOSE_REASON);
                }
                _ => {}
            }
        }
        if !more {
            break;
        }
    }
    assert!(buf.is_empty(), "the {role:?} queued a partial frame");
    assert_eq!(messages, run.echoed, "echoed messages changed on the way");
}

/// The events of two runs over the same stream must match. Only the kind of
/// a failure may differ: a compressed text message can fail on UTF-8 in one
/// split and on its inflated size in another.
fn assert_same_events(split: &[Event], whole: &[Event], read_size: usize) {
    let same = split.len() == whole.len()
        && split.iter().zip(whole).all(|pair| match pair {
            (Event::Error(_), Event::Error(_)) => true,
            (a, b) => a == b,
        });
    assert!(
        same,
        "events depend on read boundaries:\nreads of {read_size} bytes: {split:?}\none read: {whole:?}"
    );
}

// ---------------------------------------------------------------------------
// handshake_request
// ---------------------------------------------------------------------------

/// The key of the client in [`handshake_request`]'s response half; seeds
/// that are responses carry its accept value.
pub const CLIENT_KEY: [u8; 16] = *b"wsbus-fuzz-key!!";

/// `handshake_request`: the input as a client's request (server side: parse,
/// validate, negotiate, answer; then the bytes after the head as frames), and
/// as a server's response to a fixed client request.
pub fn handshake_request(data: &[u8]) {
    server_handshake(data);
    client_handshake(data);
}

fn server_handshake(data: &[u8]) {
    let (head, len) = match handshake::parse_request(data) {
        Ok(None) => return,
        Err(rejection) => return check_rejection(&rejection),
        Ok(Some(parsed)) => parsed,
    };
    assert!(0 < len && len <= data.len());
    // The head alone parses the same (what follows is WebSocket data).
    assert_eq!(
        handshake::parse_request(&data[..len]),
        Ok(Some((head.clone(), len)))
    );
    let upgrade = match UpgradeRequest::from_head(&head) {
        Ok(upgrade) => upgrade,
        Err(rejection) => return check_rejection(&rejection),
    };
    let deflate = upgrade.negotiate_deflate(&DeflateConfig::default());
    let protocol = upgrade.select_protocol(&upgrade.protocols);
    assert_eq!(protocol, upgrade.protocols.first().map(String::as_str));
    let response = upgrade.response(protocol, deflate.as_ref());
    assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(response.ends_with(b"\r\n\r\n"));
    round_trip_with_client(&head, &upgrade, protocol, deflate.as_ref(), &response);

    // The rest of the input is what the client sends next.
    let options = Options {
        deflate,
        echo: true,
        limits: SMALL_LIMITS,
        close_first: false,
        read_size: usize::MAX,
        mask_seed: 7,
    };
    let run = drive(Role::Server, &options, &data[len..], usize::MAX);
    check_wire(Role::Server, &options, &run);
}

/// A client with the request's key accepts the server's `101` and agrees on
/// what was negotiated; the request that client writes is accepted in turn.
fn round_trip_with_client(
    head: &RequestHead,
    upgrade: &UpgradeRequest,
    protocol: Option<&str>,
    deflate: Option<&DeflateParams>,
    response: &[u8],
) {
    let raw = BASE64
        .decode(&upgrade.key)
        .expect("the key was validated as base64");
    let key: [u8; 16] = raw.try_into().expect("the key was validated as 16 bytes");
    if BASE64.encode(key) != upgrade.key {
        return; // a non-canonical spelling: a client would not send it
    }
    let request = ClientRequest {
        host: upgrade.host.clone(),
        target: head.target.clone(),
        protocols: upgrade.protocols.clone(),
        deflate: Some(DeflateConfig::default()),
        headers: Vec::new(),
    };
    let (client, request_bytes) = ClientHandshake::new(&request, key);
    let mut stream = response.to_vec();
    stream.extend_from_slice(b"\x81\x00");
    let (negotiated, len) = client
        .parse_response(&stream)
        .unwrap_or_else(|err| panic!("client rejects the server's 101 ({err}): {response:?}"))
        .expect("a complete response");
    assert_eq!(len, response.len());
    assert_eq!(negotiated.protocol.as_deref(), protocol);
    assert_eq!(negotiated.deflate.as_ref(), deflate);

    let (head2, len2) = handshake::parse_request(&request_bytes)
        .unwrap_or_else(|r| panic!("the client's request is rejected: {r}"))
        .expect("a complete request");
    assert_eq!(len2, request_bytes.len());
    let upgrade2 = UpgradeRequest::from_head(&head2)
        .unwrap_or_else(|r| panic!("the client's request is rejected: {r}"));
    assert_eq!(upgrade2.key, upgrade.key);
    assert_eq!(upgrade2.host, upgrade.host);
    assert_eq!(upgrade2.protocols, upgrade.protocols);
    assert!(
        upgrade2
            .negotiate_deflate(&DeflateConfig::default())
            .is_some(),
        "the server declines the client's own offer"
    );
}

fn check_rejection(rejection: &Rejection) {
    assert!(
        matches!(rejection.status.0, 400 | 426 | 431),
        "{rejection:?}"
    );
    let response = rejection.to_response();
    let text = String::from_utf8(response.clone()).expect("a rejection is text");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    assert_eq!(body, format!("{}\n", rejection.reason));
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
    let (client, _) = ClientHandshake::new(&ClientRequest::default(), CLIENT_KEY);
    assert_eq!(
        client.parse_response(&response),
        Err(ClientHandshakeError::Status(rejection.status.0))
    );
}

/// The input as the response to a client that offered `chat` and
/// permessage-deflate; the bytes after an accepted head are frames.
fn client_handshake(data: &[u8]) {
    let request = ClientRequest {
        host: "example.com".into(),
        target: "/chat".into(),
        protocols: vec!["chat".into()],
        deflate: Some(DeflateConfig::default()),
        headers: Vec::new(),
    };
    let (client, _) = ClientHandshake::new(&request, CLIENT_KEY);
    let Ok(Some((negotiated, len))) = client.parse_response(data) else {
        return;
    };
    assert!(0 < len && len <= data.len());
    if let Some(protocol) = &negotiated.protocol {
        assert_eq!(protocol, "chat");
    }
    if let Some(params) = &negotiated.deflate {
        for bits in [params.server_max_window_bits, params.client_max_window_bits]
            .into_iter()
            .flatten()
        {
            assert!((8..=15).contains(&bits), "{params:?}");
        }
    }
    let options = Options {
        deflate: negotiated.deflate,
        echo: true,
        limits: SMALL_LIMITS,
        close_first: false,
        read_size: usize::MAX,
        mask_seed: 11,
    };
    let run = drive(Role::Client, &options, &data[len..], usize::MAX);
    check_wire(Role::Client, &options, &run);
}

// ---------------------------------------------------------------------------
// inflate
// ---------------------------------------------------------------------------

/// The `max_inflated_size` of the `inflate` target for a 2-bit selector.
pub const INFLATE_LIMITS: [usize; 4] = [0, 64, 1024, 16 << 10];

/// `inflate`: the input's payload sent as a compressed (RSV1) message to a
/// server with permessage-deflate and a small `max_inflated_size`.
///
/// * byte 0, bit 0: text (else binary); bits 1–2: parameters (default, client
///   no context takeover, client window 9, client window 8 + no takeover);
///   bits 3–4: 1, 2, 3 or 7 fragments; bit 5: send the message twice (the
///   second one inflates with the first one's window); bits 6–7: the limit
///   ([`INFLATE_LIMITS`]).
/// * byte 1: the size of each read (0: one read).
/// * the rest: the compressed payload, without the `00 00 FF FF` tail.
///
/// Every message delivered must be within the limit and equal to what a
/// reference inflater (flate2, fed the whole payload and the tail) produces; a
/// payload the reference cannot inflate within the limit must fail.
pub fn inflate(data: &[u8]) {
    let flags = data.first().copied().unwrap_or(0);
    let read_size = match data.get(1).copied().unwrap_or(0) {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let payload = data.get(2..).unwrap_or_default();
    let text = flags & 1 != 0;
    let params = match (flags >> 1) & 3 {
        0 => DeflateParams::default(),
        1 => DeflateParams {
            client_no_context_takeover: true,
            ..DeflateParams::default()
        },
        2 => DeflateParams {
            client_max_window_bits: Some(9),
            ..DeflateParams::default()
        },
        _ => DeflateParams {
            client_no_context_takeover: true,
            client_max_window_bits: Some(8),
            ..DeflateParams::default()
        },
    };
    let fragments = [1, 2, 3, 7][usize::from((flags >> 3) & 3)];
    let count = if flags & 0x20 != 0 { 2 } else { 1 };
    let limit = INFLATE_LIMITS[usize::from(flags >> 6)];
    let limits = Limits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
        max_inflated_size: limit,
    };

    let opcode = if text { OpCode::TEXT } else { OpCode::BINARY };
    let mut keys = mask_source(u32::from(flags));
    let mut wire = BytesMut::new();
    for _ in 0..count {
        for i in 0..fragments {
            let piece =
                &payload[i * payload.len() / fragments..(i + 1) * payload.len() / fragments];
            let header = FrameHeader {
                fin: i + 1 == fragments,
                rsv1: i == 0,
                rsv2: false,
                rsv3: false,
                opcode: if i == 0 { opcode } else { OpCode::CONTINUATION },
                mask: Some(keys.next_key()),
                payload_len: piece.len() as u64,
            };
            header.encode(&mut wire);
            let start = wire.len();
            wire.extend_from_slice(piece);
            apply_mask(&mut wire[start..], header.mask.expect("masked"), 0);
        }
    }

    let mut server = Connection::server(limits).with_deflate(&params, &DeflateConfig::default());
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    let mut sent = Vec::new();
    for piece in wire.chunks(read_size) {
        buf.extend_from_slice(piece);
        loop {
            let more = server.handle_read(&mut buf);
            events.extend(std::iter::from_fn(|| server.poll_event()));
            if !more {
                break;
            }
        }
        drain(&mut server, &mut sent);
    }

    for event in &events {
        match event {
            Event::Message(message) => {
                assert!(
                    message.len() <= limit,
                    "inflated to {} bytes, limit {limit}",
                    message.len()
                );
                assert_eq!(message.opcode(), opcode);
            }
            Event::Error(err) => {
                assert!(
                    matches!(
                        err,
                        ProtocolError::InflatedTooLarge { .. }
                            | ProtocolError::InvalidDeflateData
                            | ProtocolError::InvalidUtf8
                    ),
                    "unexpected {err:?}"
                );
                assert_eq!(server.state(), State::Closed);
                assert_eq!(server.close_status(), Some(err.close_code()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    if matches!(events.last(), Some(Event::Error(_))) {
        assert!(
            events[..events.len() - 1]
                .iter()
                .all(|e| matches!(e, Event::Message(_)))
        );
    } else {
        assert_eq!(events.len(), count, "every message is delivered or fails");
    }

    let recv_bits = params.client_max_window_bits.unwrap_or(15).max(9);
    let expected = reference_inflate(
        payload,
        count,
        recv_bits,
        params.client_no_context_takeover,
        limit,
        text,
    );
    for (i, expect) in expected.iter().enumerate() {
        match expect {
            Expect::Unknown => break,
            Expect::Message(bytes) => match events.get(i) {
                Some(Event::Message(message)) => assert_eq!(
                    message.payload()[..],
                    bytes[..],
                    "message {i} differs from the reference inflater"
                ),
                other => panic!(
                    "message {i} inflates to {} bytes (limit {limit}) but got {other:?}",
                    bytes.len()
                ),
            },
            Expect::Fail => {
                assert!(
                    matches!(events.get(i), Some(Event::Error(_))),
                    "message {i} should fail, got {:?}",
                    events.get(i)
                );
                break;
            }
        }
    }
}

/// What the reference inflater expects of one message.
#[derive(Debug)]
enum Expect {
    Message(Vec<u8>),
    /// Invalid DEFLATE, too large, or (text) not UTF-8.
    Fail,
    /// The stream has a final block: what follows it is up to the receiver.
    Unknown,
}

fn reference_inflate(
    payload: &[u8],
    count: usize,
    window_bits: u8,
    no_context_takeover: bool,
    limit: usize,
    text: bool,
) -> Vec<Expect> {
    let mut inflater = Decompress::new_with_window_bits(false, window_bits);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xFF, 0xFF]);
    let mut expected = Vec::new();
    for _ in 0..count {
        let mut out = Vec::with_capacity(limit + 1);
        let start = inflater.total_in();
        let outcome = loop {
            let consumed = (inflater.total_in() - start) as usize;
            let before = (consumed, out.len());
            match inflater.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync) {
                Err(_) => break Expect::Fail,
                Ok(Status::StreamEnd) => break Expect::Unknown,
                Ok(_) if out.len() > limit => break Expect::Fail,
                Ok(_) => {}
            }
            let consumed = (inflater.total_in() - start) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                let valid = !text || std::str::from_utf8(&out).is_ok();
                break if valid {
                    Expect::Message(out)
                } else {
                    Expect::Fail
                };
            }
            if before == (consumed, out.len()) {
                break Expect::Unknown; // no progress: not a case to judge
            }
        };
        let stop = !matches!(outcome, Expect::Message(_));
        expected.push(outcome);
        if stop {
            break;
        }
        if no_context_takeover {
            inflater.reset(false);
        }
    }
    expected
}
