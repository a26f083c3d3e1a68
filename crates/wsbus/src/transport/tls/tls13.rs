//! TLS 1.3 record protection (RFC 8446 §5) for a connection whose handshake
//! rustls has done, so that an idle wss socket keeps its traffic keys as a
//! few bytes instead of expanded cipher state.
//!
//! rustls keeps, for the life of a connection, both directions' AEAD keys in
//! their expanded form (an AES key schedule and a GHASH table: 560 bytes
//! each with *ring*) and its handshake state. Here, once the handshake is
//! over, rustls hands over the traffic secrets and keeps only what derives
//! the next ones ([`KernelConnection`]); the records are opened and sealed by
//! [`Records`]. A socket stores each direction's key as its 16 or 32 bytes,
//! its IV and its sequence number ([`TrafficKey`]); the expanded key lives in
//! a small per-thread cache ([`KEY_CACHE_SLOTS`]), so an active socket finds
//! it there and an idle one costs nothing beyond its bytes.
//!
//! What this layer accepts after the handshake, all of it protected
//! (`application_data` outer type, §5.2):
//! - application data, handed to the reader;
//! - alerts: `close_notify` ends the stream, `user_canceled` is ignored,
//!   every other one is fatal (§6);
//! - handshake: only a `KeyUpdate` (§4.6.3), whole and last in its record
//!   (§5.1: handshake messages must not span key changes). This server asks
//!   for no client certificate after the handshake, so nothing else may come.
//!
//! Everything else ends the connection with the alert §5 and §6 name.
//! Sequence numbers never wrap (§5.3): our direction is rekeyed before the
//! cipher suite's confidentiality limit (§5.5), the peer's is refused at the
//! limit rustls also uses.
//!
//! TLS 1.2 connections stay on rustls's record layer (`tls.rs`).

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use tokio_rustls::rustls::kernel::KernelConnection;
use tokio_rustls::rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use tokio_rustls::rustls::{self, ConnectionTrafficSecrets};
use zeroize::Zeroize;

/// Wire values used here (RFC 8446 §5.1 `ContentType`, §6 `AlertDescription`,
/// §4 `HandshakeType`).
mod wire {
    pub(super) const ALERT: u8 = 21;
    pub(super) const HANDSHAKE: u8 = 22;
    pub(super) const APPLICATION_DATA: u8 = 23;
    /// `legacy_record_version` of every record we send (§5.1).
    pub(super) const LEGACY_VERSION: [u8; 2] = [0x03, 0x03];
    pub(super) const KEY_UPDATE: u8 = 24;

    pub(super) const LEVEL_WARNING: u8 = 1;
    pub(super) const LEVEL_FATAL: u8 = 2;
    pub(super) const CLOSE_NOTIFY: u8 = 0;
    pub(super) const UNEXPECTED_MESSAGE: u8 = 10;
    pub(super) const BAD_RECORD_MAC: u8 = 20;
    pub(super) const RECORD_OVERFLOW: u8 = 22;
    pub(super) const ILLEGAL_PARAMETER: u8 = 47;
    pub(super) const DECODE_ERROR: u8 = 50;
    pub(super) const INTERNAL_ERROR: u8 = 80;
    pub(super) const USER_CANCELED: u8 = 90;
}

/// Record header: type, legacy version, length (§5.1).
const HEADER_LEN: usize = 5;
/// Plaintext per record, at most (§5.1: 2^14).
pub(super) const MAX_PLAINTEXT: usize = 1 << 14;
/// Ciphertext length a record may declare, at most (§5.2: 2^14 + 256).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// The AEAD tag of every TLS 1.3 cipher suite (AES-GCM, ChaCha20-Poly1305).
const TAG_LEN: usize = 16;

/// `KeyUpdate`s asking for ours that the peer may send between two of its
/// application data records: each costs two key derivations and a record
/// of ours. rustls and BoringSSL allow the same 32.
const MAX_KEY_UPDATE_REQUESTS: u8 = 32;

/// Sequence numbers from which a direction is done: ours is rekeyed before
/// it (§5.3: never wrap), a peer that reaches it without rekeying is cut
/// off. The value rustls's own record layer uses.
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;

/// Expanded keys kept per thread. A socket's two keys sit in two slots
/// (chosen by key id), so the keys of about half this many sockets stay
/// expanded on a worker; a socket whose slot another key took expands its
/// key again (~0.2 µs for AES-GCM). 256 slots are ~140 KiB per thread.
pub(crate) const KEY_CACHE_SLOTS: usize = 256;

/// Names a traffic key for the per-thread cache. Never reused in the life
/// of the process, so a slot can never hand one connection's key to another.
static NEXT_KEY_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static KEY_CACHE: RefCell<Vec<Option<(u64, LessSafeKey)>>> = const { RefCell::new(Vec::new()) };
}

/// A connection error of this layer: what the peer is told (if anything),
/// and what the server's log says.
#[derive(Debug)]
pub(super) struct Fatal {
    /// The alert we send; `None` when the peer sent a fatal alert itself.
    alert: Option<u8>,
    reason: String,
}

impl Fatal {
    fn new(alert: u8, reason: impl Into<String>) -> Self {
        Self {
            alert: Some(alert),
            reason: reason.into(),
        }
    }
}

impl From<Fatal> for io::Error {
    fn from(fatal: Fatal) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {}", fatal.reason))
    }
}

/// What [`Records::open`] left behind.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Opened {
    /// Every whole record is consumed; more ciphertext is needed.
    NeedMore,
    /// The peer's `close_notify` came: nothing after it is read (§6.1).
    PeerClosed,
}

/// One direction's key as it is kept between uses.
struct TrafficKey {
    id: u64,
    algorithm: &'static aead::Algorithm,
    key: [u8; 32],
    iv: [u8; aead::NONCE_LEN],
    /// The next record's sequence number (§5.3).
    seq: u64,
}

impl TrafficKey {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Self, Fatal> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => {
                return Err(Fatal::new(
                    wire::INTERNAL_ERROR,
                    "cipher suite without a record layer here",
                ));
            }
        };
        let mut traffic = Self {
            id: NEXT_KEY_ID.fetch_add(1, Ordering::Relaxed),
            algorithm,
            key: [0; 32],
            iv: [0; aead::NONCE_LEN],
            seq,
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        if key.len() != algorithm.key_len() || iv.len() != aead::NONCE_LEN {
            return Err(Fatal::new(
                wire::INTERNAL_ERROR,
                "traffic secret of the wrong size",
            ));
        }
        traffic.key[..key.len()].copy_from_slice(key);
        traffic.iv.copy_from_slice(iv);
        Ok(traffic)
    }

    /// The nonce of the next record, and the sequence number moved on
    /// (§5.3: the IV XOR the sequence number, left-padded to its length).
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[aead::NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *byte ^= seq;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }

    /// Run `use_key` with this key expanded: from this thread's cache, or
    /// expanded into it.
    fn with<R>(&self, use_key: impl FnOnce(&LessSafeKey) -> R) -> R {
        KEY_CACHE.with_borrow_mut(|slots| {
            if slots.is_empty() {
                slots.resize_with(KEY_CACHE_SLOTS, || None);
            }
            let slot = &mut slots[(self.id % KEY_CACHE_SLOTS as u64) as usize];
            let key = match slot {
                Some((id, key)) if *id == self.id => key,
                _ => {
                    let unbound =
                        UnboundKey::new(self.algorithm, &self.key[..self.algorithm.key_len()])
                            .expect("key length checked when the key was made");
                    &slot.insert((self.id, LessSafeKey::new(unbound))).1
                }
            };
            use_key(key)
        })
    }

    /// Take this key's expanded form out of this thread's cache (other
    /// threads' copies are unreachable: their id is never asked for again).
    fn forget(&self) {
        let _ = KEY_CACHE.try_with(|cache| {
            if let Ok(mut slots) = cache.try_borrow_mut()
                && let Some(slot) = slots.get_mut((self.id % KEY_CACHE_SLOTS as u64) as usize)
                && slot.as_ref().is_some_and(|(id, _)| *id == self.id)
            {
                *slot = None;
            }
        });
    }
}

impl Drop for TrafficKey {
    fn drop(&mut self) {
        self.forget();
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// A TLS 1.3 server connection after its handshake: the record protection
/// of both directions, and rustls's state for the next traffic secrets.
///
/// Driving contract: [`open`](Self::open) is given the ciphertext received
/// and consumes the whole records at its front; whatever it asks to send (a
/// `KeyUpdate` the peer requested) is appended to the caller's outgoing
/// ciphertext and must go out in order with what is sealed later.
/// [`seal`](Self::seal) appends records to the same buffer.
pub(super) struct Records {
    kernel: KernelConnection<ServerConnectionData>,
    rx: TrafficKey,
    tx: TrafficKey,
    /// Records our key protects at most, its KeyUpdate included (§5.5).
    tx_rekey_at: u64,
    /// `KeyUpdate`s asking for ours since the peer's last application data.
    key_update_requests: u8,
    peer_closed: bool,
}

impl Records {
    /// Take over from `conn`, a TLS 1.3 connection past its handshake that
    /// has just encrypted application data, so that nothing it owes the peer
    /// (a `KeyUpdate` answering one that came with the client's `Finished`)
    /// is left unsent. `peer_closed`: rustls saw the peer's `close_notify`.
    /// Needs `enable_secret_extraction`.
    pub(super) fn new(conn: UnbufferedServerConnection, peer_closed: bool) -> Result<Self, Fatal> {
        let internal = |err: rustls::Error| Fatal::new(wire::INTERNAL_ERROR, err.to_string());
        let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(internal)?;
        let Some(suite) = kernel.negotiated_cipher_suite().tls13() else {
            return Err(Fatal::new(wire::INTERNAL_ERROR, "not a TLS 1.3 connection"));
        };
        Ok(Self {
            tx_rekey_at: suite.common.confidentiality_limit.min(SEQ_SOFT_LIMIT),
            rx: TrafficKey::new(secrets.rx.0, secrets.rx.1)?,
            tx: TrafficKey::new(secrets.tx.0, secrets.tx.1)?,
            kernel,
            key_update_requests: 0,
            peer_closed,
        })
    }

    /// Consume every whole record at the front of `incoming`: application
    /// data is appended to `plaintext`, our answer to a `KeyUpdate` to
    /// `outgoing`. A record cut short stays in `incoming`.
    pub(super) fn open(
        &mut self,
        incoming: &mut BytesMut,
        plaintext: &mut BytesMut,
        outgoing: &mut Vec<u8>,
    ) -> Result<Opened, Fatal> {
        loop {
            if self.peer_closed {
                // §6.1: data received after a closure alert is ignored.
                incoming.clear();
                return Ok(Opened::PeerClosed);
            }
            let Some(&[outer_type, _, _, len_hi, len_lo]) = incoming.get(..HEADER_LEN) else {
                return Ok(Opened::NeedMore);
            };
            let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
            // §5: after the handshake every record is protected, and the
            // one change_cipher_spec compatibility record is over too.
            if outer_type != wire::APPLICATION_DATA {
                return Err(Fatal::new(
                    wire::UNEXPECTED_MESSAGE,
                    format!("unprotected record of type {outer_type} after the handshake"),
                ));
            }
            if len > MAX_CIPHERTEXT {
                return Err(Fatal::new(
                    wire::RECORD_OVERFLOW,
                    "record longer than 2^14 + 256",
                ));
            }
            if incoming.len() < HEADER_LEN + len {
                return Ok(Opened::NeedMore);
            }
            if self.rx.seq >= SEQ_SOFT_LIMIT {
                return Err(Fatal::new(
                    wire::UNEXPECTED_MESSAGE,
                    "peer did not update its key",
                ));
            }
            let (header, body) = incoming[..HEADER_LEN + len].split_at_mut(HEADER_LEN);
            let aad = Aad::from(<[u8; HEADER_LEN]>::try_from(&*header).expect("header length"));
            let nonce = self.rx.next_nonce();
            let inner_len = self
                .rx
                .with(|key| key.open_in_place(nonce, aad, body).map(|inner| inner.len()))
                .map_err(|_| Fatal::new(wire::BAD_RECORD_MAC, "record failed authentication"))?;
            // §5.4: the inner plaintext, padding included, is at most
            // 2^14 + 1 bytes.
            if inner_len > MAX_PLAINTEXT + 1 {
                return Err(Fatal::new(
                    wire::RECORD_OVERFLOW,
                    "inner plaintext longer than 2^14 + 1",
                ));
            }
            let inner = &body[..inner_len];
            // §5.4: zero padding follows the content type, the last byte
            // that is not zero.
            let Some(type_at) = inner.iter().rposition(|&byte| byte != 0) else {
                return Err(Fatal::new(
                    wire::UNEXPECTED_MESSAGE,
                    "record without a content type",
                ));
            };
            let content = &inner[..type_at];
            if content.len() > MAX_PLAINTEXT {
                return Err(Fatal::new(
                    wire::RECORD_OVERFLOW,
                    "plaintext longer than 2^14",
                ));
            }
            match inner[type_at] {
                wire::APPLICATION_DATA => plaintext.extend_from_slice(content),
                wire::ALERT => self.peer_alert(content)?,
                wire::HANDSHAKE => self.peer_handshake(content, outgoing)?,
                other => {
                    return Err(Fatal::new(
                        wire::UNEXPECTED_MESSAGE,
                        format!("record of content type {other}"),
                    ));
                }
            }
            incoming.advance(HEADER_LEN + len);
        }
    }

    /// §6: `close_notify` closes the peer's direction; `user_canceled` is
    /// a warning followed by `close_notify`; any other alert is fatal and
    /// is not answered.
    fn peer_alert(&mut self, alert: &[u8]) -> Result<(), Fatal> {
        match *alert {
            [_, wire::CLOSE_NOTIFY] => {
                self.peer_closed = true;
                Ok(())
            }
            [_, wire::USER_CANCELED] => Ok(()),
            [_, description] => Err(Fatal {
                alert: None,
                reason: format!("peer sent alert {description}"),
            }),
            _ => Err(Fatal::new(
                wire::DECODE_ERROR,
                "alert record not two bytes long",
            )),
        }
    }

    /// §4.6.3: a `KeyUpdate` replaces the peer's key from the next record
    /// on; if the peer asks, ours follows, before our next record.
    fn peer_handshake(&mut self, message: &[u8], outgoing: &mut Vec<u8>) -> Result<(), Fatal> {
        // §4: type, 24-bit length, body. A message split across records is
        // refused: the only one that may come is 5 bytes long.
        let [msg_type, len_0, len_1, len_2, ref body @ ..] = *message else {
            return Err(Fatal::new(
                wire::UNEXPECTED_MESSAGE,
                "handshake message split across records",
            ));
        };
        if msg_type != wire::KEY_UPDATE {
            return Err(Fatal::new(
                wire::UNEXPECTED_MESSAGE,
                format!("handshake message {msg_type} after the handshake"),
            ));
        }
        if [len_0, len_1, len_2] != [0, 0, 1] {
            return Err(Fatal::new(
                wire::DECODE_ERROR,
                "KeyUpdate of the wrong length",
            ));
        }
        let request_update = match *body {
            [request] => request,
            [] => {
                return Err(Fatal::new(
                    wire::UNEXPECTED_MESSAGE,
                    "KeyUpdate split across records",
                ));
            }
            // §5.1: handshake messages must not span key changes.
            _ => {
                return Err(Fatal::new(
                    wire::UNEXPECTED_MESSAGE,
                    "data after a KeyUpdate in its record",
                ));
            }
        };
        let requested = match request_update {
            0 => false,
            1 => true,
            _ => {
                return Err(Fatal::new(
                    wire::ILLEGAL_PARAMETER,
                    "KeyUpdate request not 0 or 1",
                ));
            }
        };
        if requested {
            self.key_update_requests += 1;
            if self.key_update_requests > MAX_KEY_UPDATE_REQUESTS {
                return Err(Fatal::new(
                    wire::UNEXPECTED_MESSAGE,
                    "too many KeyUpdate requests without data",
                ));
            }
        }
        let internal = |err: rustls::Error| Fatal::new(wire::INTERNAL_ERROR, err.to_string());
        let (seq, secrets) = self.kernel.update_rx_secret().map_err(internal)?;
        self.rx = TrafficKey::new(seq, secrets)?;
        if requested {
            self.update_tx_key(outgoing)?;
        }
        Ok(())
    }

    /// Send a `KeyUpdate` (not asking for the peer's) under the current key,
    /// then switch to the next one, made before anything is sent.
    fn update_tx_key(&mut self, outgoing: &mut Vec<u8>) -> Result<(), Fatal> {
        let internal = |err: rustls::Error| Fatal::new(wire::INTERNAL_ERROR, err.to_string());
        let (seq, secrets) = self.kernel.update_tx_secret().map_err(internal)?;
        let next = TrafficKey::new(seq, secrets)?;
        self.seal_record(wire::HANDSHAKE, outgoing, |out| {
            out.extend_from_slice(&[wire::KEY_UPDATE, 0, 0, 1, 0]);
        })?;
        self.tx = next;
        Ok(())
    }

    /// Seal up to `limit` bytes of `bufs` as application data records
    /// appended to `outgoing`; returns the plaintext bytes taken. The slices
    /// are copied once, into the records.
    pub(super) fn seal(
        &mut self,
        bufs: &[IoSlice<'_>],
        limit: usize,
        outgoing: &mut Vec<u8>,
    ) -> Result<usize, Fatal> {
        let total = bufs.iter().map(|buf| buf.len()).sum::<usize>().min(limit);
        let records = total.div_ceil(MAX_PLAINTEXT);
        outgoing.reserve(total + records * (HEADER_LEN + 1 + TAG_LEN));
        let mut taken = 0;
        let mut slices = bufs.iter().map(|buf| &buf[..]);
        let mut current: &[u8] = &[];
        while taken < total {
            let record_len = (total - taken).min(MAX_PLAINTEXT);
            self.seal_record(wire::APPLICATION_DATA, outgoing, |out| {
                let mut filled = 0;
                while filled < record_len {
                    while current.is_empty() {
                        current = slices.next().expect("`total` counts these bytes");
                    }
                    let piece = current.len().min(record_len - filled);
                    out.extend_from_slice(&current[..piece]);
                    current = &current[piece..];
                    filled += piece;
                }
            })?;
            taken += record_len;
        }
        Ok(taken)
    }

    /// Seal our `close_notify` (§6.1).
    pub(super) fn seal_close_notify(&mut self, outgoing: &mut Vec<u8>) -> Result<(), Fatal> {
        self.seal_alert(wire::CLOSE_NOTIFY, outgoing)
    }

    /// Seal the alert that tells the peer about `fatal`, if it has one;
    /// whether it did.
    pub(super) fn seal_fatal(&mut self, fatal: &Fatal, outgoing: &mut Vec<u8>) -> bool {
        match fatal.alert {
            Some(description) => self.seal_alert(description, outgoing).is_ok(),
            None => false,
        }
    }

    /// Seal our alert: `close_notify` (warning) or a fatal one.
    fn seal_alert(&mut self, description: u8, outgoing: &mut Vec<u8>) -> Result<(), Fatal> {
        let level = match description {
            wire::CLOSE_NOTIFY => wire::LEVEL_WARNING,
            _ => wire::LEVEL_FATAL,
        };
        self.seal_record(wire::ALERT, outgoing, |out| {
            out.extend_from_slice(&[level, description]);
        })
    }

    /// Append one record of `content_type` whose content `write_content`
    /// appends (at most 2^14 bytes), updating our key first when it is due
    /// (§5.5). The content is sealed where it was written.
    fn seal_record(
        &mut self,
        content_type: u8,
        outgoing: &mut Vec<u8>,
        write_content: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), Fatal> {
        if self.tx.seq + 1 >= self.tx_rekey_at && content_type != wire::HANDSHAKE {
            self.update_tx_key(outgoing)?;
        }
        // §5.3: a sequence number never wraps; with the rekey above only a
        // failed update could get here.
        if self.tx.seq >= SEQ_SOFT_LIMIT {
            return Err(Fatal::new(wire::INTERNAL_ERROR, "our key is used up"));
        }
        let start = outgoing.len();
        outgoing.extend_from_slice(&[
            wire::APPLICATION_DATA,
            wire::LEGACY_VERSION[0],
            wire::LEGACY_VERSION[1],
            0,
            0,
        ]);
        write_content(outgoing);
        let content_len = outgoing.len() - start - HEADER_LEN;
        assert!(
            content_len <= MAX_PLAINTEXT,
            "a record holds at most 2^14 bytes"
        );
        outgoing.push(content_type);
        let length = u16::try_from(content_len + 1 + TAG_LEN).expect("at most 2^14 + 17");
        outgoing[start + 3..start + HEADER_LEN].copy_from_slice(&length.to_be_bytes());
        let (header, inner) = outgoing[start..].split_at_mut(HEADER_LEN);
        let aad = Aad::from(<[u8; HEADER_LEN]>::try_from(&*header).expect("header length"));
        let nonce = self.tx.next_nonce();
        let tag = self
            .tx
            .with(|key| key.seal_in_place_separate_tag(nonce, aad, inner))
            .expect("sealing fails only past ring's per-message size limit");
        outgoing.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

#[cfg(test)]
impl Records {
    /// Let each of our keys protect at most `records` records.
    pub(super) fn set_rekey_limit(&mut self, records: u64) {
        self.tx_rekey_at = records;
    }

    /// Ids of the current keys, to watch them change.
    pub(super) fn key_ids(&self) -> (u64, u64) {
        (self.rx.id, self.tx.id)
    }
}
