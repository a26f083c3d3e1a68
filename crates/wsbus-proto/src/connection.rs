//! The WebSocket connection state machine (RFC 6455 §5–§7, RFC 7692 §6).
//! Section numbers in this module are RFC 6455's unless RFC 7692 is named.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame, MAX_CLOSE_REASON_LEN, truncate_reason};
use crate::deflate::{DeflateConfig, DeflateContext, DeflateParams, Side};
use crate::error::{ApiError, ProtocolError};
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode};
use crate::mask::apply_mask;
use crate::message::{Message, PreparedMessage, Utf8Bytes};
use crate::outgoing::Outgoing;
use crate::utf8::Utf8Validator;

/// Which end of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones, closes TCP first (§7.1.1).
    Server,
    /// Sends masked frames with keys from a [`MaskKeySource`].
    Client,
}

/// Where a client's masking keys come from (§5.3: "MUST be derived from a
/// strong source of entropy"). Randomness is passed in so the state machine
/// stays deterministic under test.
///
/// Any `FnMut() -> [u8; 4] + Send` closure is a source.
pub trait MaskKeySource: Send {
    /// The masking key for the next frame sent. §5.3: "The masking key needs
    /// to be unpredictable"; a fixed or guessable key lets a script steer the
    /// bytes an intermediary sees.
    fn next_key(&mut self) -> [u8; 4];
}

impl<F: FnMut() -> [u8; 4] + Send> MaskKeySource for F {
    fn next_key(&mut self) -> [u8; 4] {
        self()
    }
}

/// Size limits on what the peer may send, in bytes. Exceeding any fails the
/// connection with 1009 ([`CloseCode::MESSAGE_TOO_BIG`]). Control frames are
/// bounded by the protocol instead (125 bytes, §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame, as it is on the wire. Checked from the
    /// header, before any payload is buffered.
    pub max_frame_size: u64,
    /// Largest message, counted as the sum of its frames' payloads on the wire.
    pub max_message_size: usize,
    /// Largest message after decompression: the bound on what a compressed
    /// message (a "zip bomb") can make us allocate.
    pub max_inflated_size: usize,
}

impl Limits {
    /// 16 MiB (16,777,216 bytes) for each: the largest messages of the
    /// Autobahn test suite (cases 9.x) fit, and a connection cannot make the
    /// server hold more than that per message.
    pub const DEFAULT_SIZE: usize = 16 << 20;

    /// The same limit, in bytes, for frames, messages and inflated messages.
    pub fn uniform(bytes: usize) -> Self {
        Limits {
            max_frame_size: bytes as u64,
            max_message_size: bytes,
            max_inflated_size: bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::uniform(Limits::DEFAULT_SIZE)
    }
}

/// The connection's place in the closing handshake (the Web API's `OPEN`,
/// `CLOSING`, `CLOSED`; `CONNECTING` is the handshake, before a `Connection`
/// exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Data flows both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// The closing handshake is complete, or the connection failed. Once
    /// [`Connection::outgoing`] is flushed the transport should be closed
    /// (the server closes TCP first, §7.1.1; a client waits for it).
    Closed,
}

/// What the connection reports to its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete text or binary message.
    Message(Message),
    /// The peer pinged, with this payload (at most 125 bytes). The pong
    /// echoing it is already queued (§5.5.2: "Upon receipt of a Ping frame,
    /// an endpoint MUST send a Pong frame in response"), unless we already
    /// sent a close frame, after which nothing may be sent.
    Ping(Bytes),
    /// The peer sent a pong (solicited or not), with this payload.
    Pong(Bytes),
    /// The peer's close frame (`None`: it carried no status code, reported
    /// as 1005 by [`Connection::close_status`]). If we had not sent a close,
    /// our reply echoing its code is queued (§5.5.1: "If an endpoint receives
    /// a Close frame and did not previously send a Close frame, the endpoint
    /// MUST send a Close frame in response"). The state is then
    /// [`State::Closed`] and nothing more is read.
    Close(Option<CloseFrame>),
    /// The peer broke the protocol or a [`Limits`] bound; a close frame with
    /// [`ProtocolError::close_code`] is queued (unless we had already sent
    /// one) and the connection is [`State::Closed`].
    Error(ProtocolError),
}

enum ReadState {
    /// Waiting for a frame header.
    Header,
    /// Inside a frame's payload. For uncompressed data frames `processed`
    /// bytes at the front of the read buffer are already unmasked and
    /// validated in place (so a whole frame becomes a message without a copy);
    /// for compressed frames it counts the bytes already inflated and consumed.
    Payload {
        header: FrameHeader,
        processed: usize,
    },
    /// Nothing more is read: the peer closed, or the connection failed.
    Done,
}

/// The message being assembled from fragments.
#[derive(Default)]
struct Incoming {
    /// `TEXT` or `BINARY` while a message is open.
    opcode: Option<OpCode>,
    compressed: bool,
    /// Wire payload bytes received so far.
    wire_len: usize,
    /// Payload of earlier fragments, or the inflated message so far.
    buf: Vec<u8>,
    /// For compressed text: how much of `buf` the validator has seen.
    validated: usize,
    utf8: Utf8Validator,
}

/// A WebSocket connection after the opening handshake, without I/O.
///
/// # Driving contract
///
/// The driver (a tokio task, a test, a fuzzer) owns the transport and loops:
///
/// 1. **In**: append bytes read from the transport to a [`BytesMut`] and call
///    [`handle_read`](Self::handle_read). Complete frames are consumed; a
///    partial frame stays in the buffer (its payload may already be unmasked
///    in place), so keep the same buffer and append to it.
/// 2. **Events**: call [`poll_event`](Self::poll_event) until `None`; while
///    `handle_read` returned `true`, call it again (it stops after each event
///    so that the application's reply to one message precedes what the next
///    frame causes).
/// 3. **Out**: write [`outgoing`](Self::outgoing) to the transport
///    ([`Outgoing::chunks_vectored`] for one syscall per burst) and report
///    progress with [`Outgoing::advance`]. Pongs and close replies are queued
///    here automatically.
/// 4. **Send** at any time with [`send`](Self::send), [`ping`](Self::ping),
///    [`close`](Self::close); each only queues bytes.
/// 5. **End**: when [`state`](Self::state) is [`State::Closed`] and the queue
///    is flushed, close the transport (server: at once; client: after the
///    server closes it or a timeout). If the transport ends first, call
///    [`handle_eof`](Self::handle_eof). [`close_status`](Self::close_status)
///    then tells the code to report (1005 / 1006 included).
///
/// No clock and no randomness are read here: timeouts belong to the driver,
/// and a client's masking keys come from its [`MaskKeySource`].
pub struct Connection {
    role: Role,
    limits: Limits,
    masks: Option<Box<dyn MaskKeySource>>,
    deflate: Option<DeflateContext>,
    read: ReadState,
    incoming: Incoming,
    /// The event not yet polled. One is enough: `handle_read` stops at
    /// each frame that produced one, and each frame produces at most one.
    event: Option<Event>,
    out: Outgoing,
    close_sent: bool,
    close_received: bool,
    state: State,
    close_status: Option<CloseCode>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("deflate", &self.deflate)
            .field("queued", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A server-side connection.
    pub fn server(limits: Limits) -> Self {
        Self::new(Role::Server, limits, None)
    }

    /// A client-side connection; every frame it sends is masked with a key
    /// from `masks`.
    pub fn client(limits: Limits, masks: Box<dyn MaskKeySource>) -> Self {
        Self::new(Role::Client, limits, Some(masks))
    }

    fn new(role: Role, limits: Limits, masks: Option<Box<dyn MaskKeySource>>) -> Self {
        Connection {
            role,
            limits,
            masks,
            deflate: None,
            read: ReadState::Header,
            incoming: Incoming::default(),
            event: None,
            out: Outgoing::default(),
            close_sent: false,
            close_received: false,
            state: State::Open,
            close_status: None,
        }
    }

    /// Enable permessage-deflate with the parameters the handshake agreed on
    /// ([`UpgradeRequest::negotiate_deflate`](crate::handshake::UpgradeRequest::negotiate_deflate)
    /// on a server, [`Negotiated::deflate`](crate::handshake::Negotiated::deflate)
    /// on a client); `config` supplies only the local compression level and
    /// threshold. Call it before any bytes are read or sent.
    pub fn with_deflate(mut self, params: &DeflateParams, config: &DeflateConfig) -> Self {
        let side = match self.role {
            Role::Server => Side::Server,
            Role::Client => Side::Client,
        };
        self.deflate = Some(DeflateContext::new(
            side,
            params,
            config.level,
            config.threshold,
        ));
        self
    }

    /// Which end this connection is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the connection is in the closing handshake.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether permessage-deflate is active.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// The close code to report once the connection is closed: the peer's
    /// code, 1005 if its close frame had none, the code we failed the
    /// connection with, or 1006 if the transport ended without a close.
    pub fn close_status(&self) -> Option<CloseCode> {
        self.close_status
    }

    /// Bytes to write to the transport, in order (step 3 of the driving
    /// contract).
    pub fn outgoing(&mut self) -> &mut Outgoing {
        &mut self.out
    }

    /// The next event, if any. At most one is pending at a time: see
    /// [`handle_read`](Self::handle_read).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// Process bytes received from the peer (see the driving contract).
    ///
    /// Stops after each frame that produced an event and returns `true`:
    /// poll the events, then call again while it returns `true`. Handling
    /// one message before parsing the next keeps replies in order — an echo of
    /// a valid message goes out before the close caused by a bad frame that
    /// followed it in the same read. Returns `false` when the buffer holds no
    /// complete frame.
    pub fn handle_read(&mut self, buf: &mut BytesMut) -> bool {
        loop {
            if self.event.is_some() {
                return true;
            }
            match &self.read {
                ReadState::Done => {
                    // After the peer's close nothing may follow; after a
                    // failure the stream can no longer be framed. Either way
                    // the bytes are dropped.
                    buf.clear();
                    return self.event.is_some();
                }
                ReadState::Header => {
                    let (header, len) = match FrameHeader::decode(buf) {
                        Ok(Some(decoded)) => decoded,
                        Ok(None) => return false,
                        Err(err) => {
                            self.fail(err);
                            continue;
                        }
                    };
                    if let Err(err) = self.check_header(&header) {
                        self.fail(err);
                        continue;
                    }
                    buf.advance(len);
                    self.read = ReadState::Payload {
                        header,
                        processed: 0,
                    };
                }
                &ReadState::Payload { header, processed } => {
                    match self.read_payload(header, processed, buf) {
                        Ok(Some(processed)) => {
                            self.read = ReadState::Payload { header, processed };
                            return false;
                        }
                        Ok(None) => {
                            if !matches!(self.read, ReadState::Done) {
                                self.read = ReadState::Header;
                            }
                        }
                        Err(err) => self.fail(err),
                    }
                }
            }
        }
    }

    /// How many more bytes the frame being read needs beyond the `buffered`
    /// bytes already in the read buffer; 0 between frames.
    ///
    /// An uncompressed payload waits in the read buffer until its frame is
    /// complete (it becomes the message without a copy), so a runtime that
    /// reserves this much before its next read takes a large frame in few
    /// reads and never regrows, and so copies, the buffer chunk by chunk.
    /// The frame's length passed `Limits::max_frame_size` when its header
    /// was read. Compressed payloads are inflated as they arrive: 0.
    pub fn frame_bytes_wanted(&self, buffered: usize) -> usize {
        match &self.read {
            ReadState::Payload { header, .. }
                if header.opcode.is_control() || !self.incoming.compressed =>
            {
                (header.payload_len as usize).saturating_sub(buffered)
            }
            _ => 0,
        }
    }

    /// The transport ended (EOF or error). Without a completed closing
    /// handshake that is an abnormal closure: §7.1.5, "If _The WebSocket
    /// Connection is Closed_ and no Close control frame was received by the
    /// endpoint [...], _The WebSocket Connection Close Code_ is considered
    /// to be 1006." The state becomes [`State::Closed`].
    pub fn handle_eof(&mut self) {
        self.read = ReadState::Done;
        self.state = State::Closed;
        self.close_status.get_or_insert(CloseCode::ABNORMAL);
    }

    /// Frame rules that the header alone decides (§5.2, §5.4, §5.5, RFC 7692 §6).
    fn check_header(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        if h.opcode.is_reserved() {
            return Err(ProtocolError::ReservedOpcode(h.opcode.0));
        }
        if h.rsv2 || h.rsv3 || (h.rsv1 && self.deflate.is_none()) {
            return Err(ProtocolError::ReservedBitsSet);
        }
        if h.rsv1 && (h.opcode.is_control() || h.opcode == OpCode::CONTINUATION) {
            return Err(ProtocolError::CompressedBitOnNonFirstFrame);
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            return Ok(());
        }
        match (
            h.opcode == OpCode::CONTINUATION,
            self.incoming.opcode.is_some(),
        ) {
            (true, false) => return Err(ProtocolError::UnexpectedContinuation),
            (false, true) => return Err(ProtocolError::ExpectedContinuation),
            _ => {}
        }
        if h.payload_len > self.limits.max_frame_size {
            return Err(ProtocolError::FrameTooLarge {
                limit: self.limits.max_frame_size,
            });
        }
        if self.incoming.wire_len as u64 + h.payload_len > self.limits.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge {
                limit: self.limits.max_message_size,
            });
        }
        Ok(())
    }

    /// Returns `Ok(Some(processed))` when more bytes are needed, `Ok(None)`
    /// when the frame is done.
    fn read_payload(
        &mut self,
        header: FrameHeader,
        processed: usize,
        buf: &mut BytesMut,
    ) -> Result<Option<usize>, ProtocolError> {
        // The limits checked in `check_header` keep this within memory.
        let len = header.payload_len as usize;
        if header.opcode.is_control() {
            if buf.len() < len {
                return Ok(Some(0));
            }
            let mut payload = buf.split_to(len);
            if let Some(key) = header.mask {
                apply_mask(&mut payload, key, 0);
            }
            self.handle_control(header.opcode, payload.freeze())?;
            return Ok(None);
        }
        if header.opcode != OpCode::CONTINUATION {
            self.incoming.opcode = Some(header.opcode);
            self.incoming.compressed = header.rsv1;
        }
        let text = self.incoming.opcode == Some(OpCode::TEXT);
        if self.incoming.compressed {
            return self.read_compressed(header, processed, buf, text);
        }

        // Uncompressed: unmask and validate in place as bytes arrive.
        let available = buf.len().min(len);
        if available > processed {
            let fresh = &mut buf[processed..available];
            if let Some(key) = header.mask {
                apply_mask(fresh, key, processed);
            }
            if text {
                self.incoming
                    .utf8
                    .feed(fresh)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        if available < len {
            return Ok(Some(available));
        }
        let payload = buf.split_to(len);
        self.incoming.wire_len += len;
        if !header.fin {
            self.incoming.buf.extend_from_slice(&payload);
            return Ok(None);
        }
        if text {
            self.incoming
                .utf8
                .finish()
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let data = if self.incoming.buf.is_empty() {
            payload.freeze() // the common case: a whole message, no copy
        } else {
            self.incoming.buf.extend_from_slice(&payload);
            Bytes::from(std::mem::take(&mut self.incoming.buf))
        };
        self.finish_message(data);
        Ok(None)
    }

    fn read_compressed(
        &mut self,
        header: FrameHeader,
        mut processed: usize,
        buf: &mut BytesMut,
        text: bool,
    ) -> Result<Option<usize>, ProtocolError> {
        let len = header.payload_len as usize;
        let available = buf.len().min(len - processed);
        let last = header.fin && processed + available == len;
        if available > 0 || last {
            let mut piece = buf.split_to(available);
            if let Some(key) = header.mask {
                apply_mask(&mut piece, key, processed);
            }
            processed += available;
            let deflate = self
                .deflate
                .as_mut()
                .expect("RSV1 accepted only with deflate");
            let incoming = &mut self.incoming;
            deflate.decompress(
                &piece,
                last,
                &mut incoming.buf,
                self.limits.max_inflated_size,
            )?;
            if text {
                incoming
                    .utf8
                    .feed(&incoming.buf[incoming.validated..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                incoming.validated = incoming.buf.len();
            }
        }
        if processed < len {
            return Ok(Some(processed));
        }
        self.incoming.wire_len += len;
        if header.fin {
            if text {
                self.incoming
                    .utf8
                    .finish()
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            let data = Bytes::from(std::mem::take(&mut self.incoming.buf));
            self.finish_message(data);
        }
        Ok(None)
    }

    fn finish_message(&mut self, data: Bytes) {
        let message = match self.incoming.opcode {
            Some(OpCode::TEXT) => Message::Text(Utf8Bytes::from_validated(data)),
            _ => Message::Binary(data),
        };
        let utf8 = std::mem::take(&mut self.incoming.utf8);
        self.incoming = Incoming {
            utf8,
            ..Incoming::default()
        };
        self.emit(Event::Message(message));
    }

    fn emit(&mut self, event: Event) {
        debug_assert!(self.event.is_none(), "one event per frame");
        self.event = Some(event);
    }

    fn handle_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), ProtocolError> {
        match opcode {
            OpCode::PING => {
                // §5.5.2: answer with the same payload, unless we already
                // sent a close (nothing may follow it).
                if !self.close_sent {
                    self.queue_frame(OpCode::PONG, true, false, payload.clone());
                }
                self.emit(Event::Ping(payload));
            }
            OpCode::PONG => self.emit(Event::Pong(payload)),
            OpCode::CLOSE => {
                let frame = parse_close_payload(&payload)?;
                self.close_received = true;
                self.close_status = Some(
                    frame
                        .as_ref()
                        .map_or(CloseCode::NO_STATUS_RECEIVED, |f| f.code),
                );
                if !self.close_sent {
                    // §5.5.1: reply with a close, echoing the status code.
                    let reply = match &frame {
                        Some(f) => f.code.0.to_be_bytes().to_vec().into(),
                        None => Bytes::new(),
                    };
                    self.queue_frame(OpCode::CLOSE, true, false, reply);
                    self.close_sent = true;
                }
                self.state = State::Closed;
                self.read = ReadState::Done;
                self.emit(Event::Close(frame));
            }
            _ => unreachable!("check_header admits only known control opcodes"),
        }
        Ok(())
    }

    /// Fail the connection (§7.1.7): queue a close with the fault's code and
    /// stop reading.
    fn fail(&mut self, err: ProtocolError) {
        let code = err.close_code();
        if !self.close_sent {
            let reason = err.to_string();
            let frame = CloseFrame::new(code, truncate_reason(&reason));
            self.queue_frame(OpCode::CLOSE, true, false, frame.encode_payload());
            self.close_sent = true;
        }
        self.close_status.get_or_insert(code);
        self.state = State::Closed;
        self.read = ReadState::Done;
        self.emit(Event::Error(err));
    }

    fn queue_frame(&mut self, opcode: OpCode, fin: bool, rsv1: bool, payload: Bytes) {
        let mut header = FrameHeader {
            fin,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        match &mut self.masks {
            Some(masks) => {
                header.mask = Some(masks.next_key());
                self.out.push_masked(&header, &payload);
            }
            None => self.out.push_frame(&header, payload),
        }
    }

    fn check_can_send(&self) -> Result<(), ApiError> {
        if self.close_sent {
            Err(ApiError::NotOpen)
        } else {
            Ok(())
        }
    }

    /// Queue a message as one frame, compressed when deflate is active and
    /// the message reaches [`DeflateConfig::threshold`] bytes.
    ///
    /// Fails with [`ApiError::NotOpen`] once a close frame was sent (ours or
    /// our reply to the peer's). There is no size limit on what we send: the
    /// peer's limits are its own to enforce.
    pub fn send(&mut self, message: Message) -> Result<(), ApiError> {
        self.send_fragmented(message, usize::MAX)
    }

    /// Queue a text message ([`send`](Self::send)).
    pub fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), ApiError> {
        self.send(Message::Text(text.into()))
    }

    /// Queue a binary message ([`send`](Self::send)).
    pub fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), ApiError> {
        self.send(Message::Binary(data.into()))
    }

    /// Queue a message split into frames of at most `max_frame_payload`
    /// bytes of payload (counted after compression; RSV1 only on the first
    /// frame, RFC 7692 §6.1). A `max_frame_payload` of 0 counts as 1; an empty
    /// message is one empty frame.
    pub fn send_fragmented(
        &mut self,
        message: Message,
        max_frame_payload: usize,
    ) -> Result<(), ApiError> {
        self.check_can_send()?;
        let opcode = message.opcode();
        let payload = match message {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
        };
        let (mut payload, compressed) = match &mut self.deflate {
            Some(deflate) if deflate.should_compress(payload.len()) => {
                (deflate.compress(&payload), true)
            }
            _ => (payload, false),
        };
        let max = max_frame_payload.max(1);
        let mut first = true;
        loop {
            let chunk = payload.split_to(payload.len().min(max));
            let fin = payload.is_empty();
            let op = if first { opcode } else { OpCode::CONTINUATION };
            self.queue_frame(op, fin, first && compressed, chunk);
            first = false;
            if fin {
                return Ok(());
            }
        }
    }

    /// Queue a message encoded once for many connections: the shared frame
    /// when this is a server that does not compress this message, otherwise
    /// our own encoding (a client masks each frame with its own key).
    pub fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), ApiError> {
        self.check_can_send()?;
        let compresses = self
            .deflate
            .as_ref()
            .is_some_and(|d| d.should_compress(prepared.message().len()));
        if self.role == Role::Server && !compresses {
            self.out.push_encoded(prepared.frame().clone());
            Ok(())
        } else {
            self.send(prepared.message().clone())
        }
    }

    /// Queue a ping; the peer answers with a pong carrying the same payload
    /// (§5.5.2), reported as [`Event::Pong`]. The payload is at most 125
    /// bytes ([`ApiError::ControlPayloadTooLong`]).
    pub fn ping(&mut self, payload: impl Into<Bytes>) -> Result<(), ApiError> {
        self.control(OpCode::PING, payload.into())
    }

    /// Queue an unsolicited pong, a one-way heartbeat (§5.5.3: "A response
    /// to an unsolicited Pong frame is not expected"). At most 125 bytes of
    /// payload. Pongs answering the peer's pings are queued automatically.
    pub fn pong(&mut self, payload: impl Into<Bytes>) -> Result<(), ApiError> {
        self.control(OpCode::PONG, payload.into())
    }

    fn control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), ApiError> {
        self.check_can_send()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(ApiError::ControlPayloadTooLong(payload.len()));
        }
        self.queue_frame(opcode, true, false, payload);
        Ok(())
    }

    /// Start the closing handshake.
    ///
    /// A client accepts what the Web API's `close()` accepts: 1000 or
    /// 3000–4999. A server may also send the codes it needs to explain itself
    /// (1001 going away, 1008 policy, 1011 internal error, …): any code valid
    /// on the wire. The reason is at most 123 bytes of UTF-8.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ApiError> {
        self.check_can_send()?;
        let allowed = match self.role {
            Role::Client => code.is_allowed_for_application(),
            Role::Server => code.is_valid_on_wire(),
        };
        if !allowed {
            return Err(ApiError::InvalidCloseCode(code.0));
        }
        if reason.len() > MAX_CLOSE_REASON_LEN {
            return Err(ApiError::CloseReasonTooLong(reason.len()));
        }
        let payload = CloseFrame::new(code, reason).encode_payload();
        self.queue_frame(OpCode::CLOSE, true, false, payload);
        self.close_sent = true;
        self.state = if self.close_received {
            State::Closed
        } else {
            State::Closing
        };
        Ok(())
    }
}

impl Connection {
    /// Close at once: drop queued frames that have not started to go out
    /// (the one in flight is finished), then queue the close frame. For a
    /// peer that cannot keep up — its close reason then reaches it next
    /// instead of behind data it will never read.
    pub fn close_discarding_queue(
        &mut self,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), ApiError> {
        self.check_can_send()?;
        self.out.discard_unstarted();
        self.close(code, reason)
    }
}

/// §5.5.1: empty, or a valid code and a UTF-8 reason; a single byte is an error.
fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseFrameTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = simdutf8::basic::from_utf8(reason)
                .map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Some(CloseFrame::new(code, reason)))
        }
    }
}
