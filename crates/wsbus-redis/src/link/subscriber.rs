//! The subscriber connection's task (module docs of `link`).

use super::*;

/// Why a subscriber connection ended.
type Ended = &'static str;

pub(super) async fn run(inner: Arc<Inner>, mut changes: mpsc::UnboundedReceiver<InterestChange>) {
    let mut backoff = Backoff::new();
    let mut last_seen: HashMap<Origin, u64> = HashMap::new();
    let mut was_up = false;
    loop {
        let attempt = tokio::select! {
            attempt = session(&inner, &mut changes, &mut last_seen, &mut was_up) => attempt,
            () = inner.shutdown.cancelled() => return,
        };
        // Subscriptions live on a connection: none is left.
        inner.subscribed.lock().expect("subscribed lock").clear();
        inner.set_state(LinkState::Down, attempt);
        if was_up {
            backoff = Backoff::new();
            was_up = false;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next()) => {}
            () = inner.shutdown.cancelled() => return,
        }
    }
}

struct Connection {
    stream: TcpStream,
    buf: BytesMut,
}

impl Connection {
    async fn send(&mut self, args: &[&[u8]]) -> Result<(), Ended> {
        let mut out = Vec::new();
        resp::encode_command(&mut out, args);
        match tokio::time::timeout(COMMAND_TIMEOUT, self.stream.write_all(&out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("write to Redis failed"),
            Err(_) => Err("write to Redis timed out"),
        }
    }

    /// The next value, waiting until `deadline`.
    async fn next_until(&mut self, deadline: Instant) -> Result<Reply, Ended> {
        loop {
            if let Some(reply) = resp::decode(&mut self.buf).map_err(|c| c.0)? {
                return Ok(reply);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Err("Redis closed the subscriber connection"),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err("read from Redis failed"),
                Err(_) => return Err("Redis did not answer in time"),
            }
        }
    }
}

/// One subscriber connection, from connect to its end.
async fn session(
    inner: &Arc<Inner>,
    changes: &mut mpsc::UnboundedReceiver<InterestChange>,
    last_seen: &mut HashMap<Origin, u64>,
    was_up: &mut bool,
) -> Ended {
    let mut connection = match connect(inner).await {
        Ok(connection) => connection,
        Err(why) => return why,
    };
    // Changes queued so far are in the set we are about to subscribe to.
    while changes.try_recv().is_ok() {}
    let own = node_channel(inner.origin.node);
    let mut channels: Vec<String> = vec![own.clone()];
    channels.extend(
        inner
            .interest
            .lock()
            .expect("interest lock")
            .iter()
            .cloned(),
    );
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    for batch in channels.chunks(RESUBSCRIBE_BATCH) {
        let mut args: Vec<&[u8]> = vec![b"SSUBSCRIBE"];
        args.extend(batch.iter().map(|c| c.as_bytes()));
        if let Err(why) = connection.send(&args).await {
            return why;
        }
    }
    let mut confirmed = 0;
    while confirmed < channels.len() {
        match connection.next_until(deadline).await {
            Ok(reply) => match classify(reply) {
                Push::Subscribed(channel) => {
                    inner.confirmed(channel);
                    confirmed += 1;
                }
                Push::Message(channel, payload) => inner.dispatch(last_seen, &channel, payload),
                Push::Error => return "Redis refused SSUBSCRIBE",
                Push::Other => {}
            },
            Err(why) => return why,
        }
    }
    inner.set_state(LinkState::Up, "");
    *was_up = true;
    inner.resubscribed();
    serve(inner, &mut connection, changes, last_seen, &own).await
}

async fn connect(inner: &Inner) -> Result<Connection, Ended> {
    let (host, port) = &inner.address;
    let stream =
        match tokio::time::timeout(COMMAND_TIMEOUT, TcpStream::connect((host.as_str(), *port)))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => return Err("cannot connect to Redis"),
            Err(_) => return Err("connecting to Redis timed out"),
        };
    let _ = stream.set_nodelay(true);
    let mut connection = Connection {
        stream,
        buf: BytesMut::with_capacity(16 * 1024),
    };
    if let Some((user, password)) = &inner.auth {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = user {
            args.push(user.as_bytes());
        }
        args.push(password.as_bytes());
        connection.send(&args).await?;
        match connection
            .next_until(Instant::now() + COMMAND_TIMEOUT)
            .await?
        {
            Reply::Simple(_) => {}
            // The error text may quote what was sent: never log it.
            _ => return Err("Redis refused the credentials"),
        }
    }
    Ok(connection)
}

enum Push {
    /// `SSUBSCRIBE` confirmed for this channel.
    Subscribed(String),
    Message(String, Vec<u8>),
    /// A command's error (its text is not logged: after AUTH it may quote
    /// what was sent).
    Error,
    Other,
}

fn classify(reply: Reply) -> Push {
    match reply {
        Reply::Array(Some(items)) => {
            let mut items = items.into_iter();
            let kind = items.next();
            match kind.as_ref().and_then(Reply::as_bytes) {
                Some(b"ssubscribe") => match items.next().and_then(Reply::into_bytes) {
                    Some(channel) => {
                        Push::Subscribed(String::from_utf8_lossy(&channel).into_owned())
                    }
                    None => Push::Other,
                },
                Some(b"smessage") | Some(b"message") => {
                    let channel = items.next().and_then(Reply::into_bytes);
                    let payload = items.next().and_then(Reply::into_bytes);
                    match (channel, payload) {
                        (Some(channel), Some(payload)) => {
                            Push::Message(String::from_utf8_lossy(&channel).into_owned(), payload)
                        }
                        _ => Push::Other,
                    }
                }
                _ => Push::Other,
            }
        }
        Reply::Error(_) => Push::Error,
        _ => Push::Other,
    }
}

/// Serves a confirmed subscriber connection until it fails: delivers
/// what arrives, applies interest changes, and probes.
async fn serve(
    inner: &Arc<Inner>,
    connection: &mut Connection,
    changes: &mut mpsc::UnboundedReceiver<InterestChange>,
    last_seen: &mut HashMap<Origin, u64>,
    own: &str,
) -> Ended {
    let mut probes = tokio::time::interval(PROBE_INTERVAL);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The probe in flight: its nonce and when it must be back by.
    let mut outstanding: Option<(u64, Instant)> = None;
    let mut nonce: u64 = rand::rng().random();
    loop {
        // Decode everything buffered before waiting again.
        loop {
            let reply = match resp::decode(&mut connection.buf) {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(corrupt) => return corrupt.0,
            };
            match classify(reply) {
                Push::Message(channel, payload) => {
                    if channel == own
                        && let Some(n) = probe_nonce(inner, &payload)
                    {
                        if outstanding.is_some_and(|(want, _)| want == n) {
                            outstanding = None;
                            inner.set_state(LinkState::Up, "");
                        }
                        continue;
                    }
                    inner.dispatch(last_seen, &channel, payload);
                }
                Push::Error => return "Redis refused a subscription change",
                Push::Subscribed(channel) => inner.confirmed(channel),
                Push::Other => {}
            }
        }
        let probe_deadline = outstanding.map(|(_, by)| by);
        tokio::select! {
            read = connection.stream.read_buf(&mut connection.buf) => match read {
                Ok(0) => return "Redis closed the subscriber connection",
                Ok(_) => {}
                Err(_) => return "read from Redis failed",
            },
            change = changes.recv() => {
                let result = match change {
                    Some(InterestChange::Add(channel)) => connection.send(&[b"SSUBSCRIBE", channel.as_bytes()]).await,
                    Some(InterestChange::Remove(channel)) => connection.send(&[b"SUNSUBSCRIBE", channel.as_bytes()]).await,
                    None => return "link dropped",
                };
                if let Err(why) = result {
                    return why;
                }
            }
            () = async {
                match probe_deadline {
                    Some(by) => tokio::time::sleep_until(by).await,
                    None => std::future::pending().await,
                }
            } => return "a probe did not come back: subscription deaf or Redis stalled",
            _ = probes.tick(), if outstanding.is_none() => {
                nonce = nonce.wrapping_add(1);
                outstanding = Some((nonce, Instant::now() + PROBE_TIMEOUT));
                let inner = inner.clone();
                let channel = own.to_owned();
                let payload = nonce.to_be_bytes();
                // Through the command connection, as other nodes'
                // messages come: a round trip proves both.
                tokio::spawn(async move {
                    let envelope = Envelope::encode(inner.origin, u64::MAX, KIND_PROBE, &payload);
                    let mut pipeline = redis::pipe();
                    pipeline.cmd("SPUBLISH").arg(&channel).arg(&envelope[..]);
                    let _ = inner.query::<(u64,)>(&pipeline).await;
                });
            }
        }
    }
}

/// The nonce of one of this node's own probes.
fn probe_nonce(inner: &Inner, payload: &[u8]) -> Option<u64> {
    let envelope = Envelope::decode(Bytes::copy_from_slice(payload)).ok()?;
    if envelope.origin != inner.origin || envelope.kind != KIND_PROBE {
        return None;
    }
    Some(u64::from_be_bytes(envelope.payload[..].try_into().ok()?))
}
