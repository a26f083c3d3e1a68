//! A load generator usable against any WebSocket server: the library behind
//! the `wsbus bench` command.
//!
//! Each scenario opens its connections, runs a warm-up, then measures over a
//! fixed window and prints **one JSON object** on stdout (progress and a human
//! summary go to stderr), so that a runner can collect it (`bench/run`).
//!
//! * `echo`: C connections, W messages in flight each (W = 1 is ping-pong):
//!   messages/s, MB/s, round-trip latency percentiles.
//! * `fanout`: C subscribers and one publisher on a broadcast path: deliveries/s,
//!   publish-to-delivery latency, lost messages.
//! * `connect`: connect + upgrade + closing handshake cycles/s.
//! * `idle`: N idle connections, the server's RSS growth per connection.
//! * `bus`: Bayeux sessions over both transports, a publisher at a fixed
//!   rate: deliveries/s, latency, lost messages.
//!
//! With `--server-pid` every scenario also reports the server's CPU time per
//! operation (from `/proc/PID/stat`): on a loaded 2-core machine the load
//! generator often saturates before a fast server does, and CPU per operation
//! stays comparable where throughput does not. The generator reports its own
//! CPU per operation too, so it can be measured against itself.
//!
//! The generator drives `wsbus-proto`'s sans-IO client connection directly:
//! one task per connection, reads of up to [`READ_CHUNK`] bytes. How it
//! writes is `echo`'s `--shape`:
//!
//! * `burst` (the default, and how the other scenarios write): every frame
//!   queued by one read's echoes goes out with one `writev`. Cheap for the
//!   generator, and the server then reads many frames per wake-up.
//! * `per-message`: as browsers and most client libraries write, one
//!   message per write syscall (one `writev` of the frame's header and
//!   payload), the next one as soon as an echo is parsed. This costs the
//!   server a wake-up and a read per message, which `burst` hides.
//!
//! What real clients look like besides, on the scenarios that take `--url`:
//!
//! * `wss://` URLs (all but `bus`): TLS through rustls, trusting only
//!   `--tls-ca`; no session resumption, so `connect` pays a full handshake
//!   per cycle. Every report says `"tls"`.
//! * `--deflate-offer none|plain|browser` (`echo`, `idle`): `browser` sends
//!   Chromium's offer byte for byte and compresses as the server's answer
//!   lets it (RFC 7692 §7.1), every message at zlib's default level; the
//!   report carries the server's answer as `"extensions"`.
//! * `echo` reports the bytes written and read on the socket per message
//!   (after compression and TLS): `wire_bytes_sent_per_msg`,
//!   `wire_bytes_received_per_msg`.
//! * `idle --exchange-size` sends one message per connection and waits for
//!   one back before measuring: what a server keeps after a conversation
//!   (compression contexts, grown buffers), not just after an upgrade.

mod bus;
mod connect;
mod echo;
mod fanout;
mod framing;
mod idle;
mod socket;
mod tls;

pub use bus::BusArgs;
pub use connect::ConnectArgs;
pub use echo::{EchoArgs, Shape};
pub use fanout::FanoutArgs;
pub use framing::Framing;
pub use idle::IdleArgs;
pub use socket::{DeflateOffer, Header, UpgradeOptions};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

/// Bytes asked of the kernel per read: large enough that a burst of echoed
/// 64 KiB messages takes few syscalls.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// How many handshakes are in progress at once while connections are opened:
/// below the listen backlog of common servers (128–1024), so a large
/// connection count does not overflow it and retry SYNs for seconds.
pub(crate) const CONNECT_CONCURRENCY: usize = 128;

#[derive(Subcommand, Debug)]
#[doc = "What to measure: one subcommand of `wsbus bench` each."]
pub enum Scenario {
    /// C connections echoing S-byte messages with W in flight per connection
    /// (--shape per-message: one write per message, like a browser).
    Echo(EchoArgs),
    /// C subscribers and one publisher on a broadcast path (every message sent
    /// there goes to every socket on it).
    Fanout(FanoutArgs),
    /// Connect, upgrade and close, as many times as possible.
    Connect(ConnectArgs),
    /// Hold N idle connections and report the server's RSS per connection
    /// (needs --server-pid).
    Idle(IdleArgs),
    /// Bayeux sessions over websocket and long-polling on a bus (e.g.
    /// http://127.0.0.1:8080/amb) with a publisher at a fixed rate.
    Bus(BusArgs),
}

/// Options every scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The server: a ws:// or wss:// URL (wss:// needs --tls-ca; `bus`
    /// takes the bus's http:// URL).
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    pub url: String,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// The server's process id: adds its CPU time per operation (and RSS).
    /// Several (comma-separated or repeated) for a server made of several
    /// processes, e.g. cluster nodes and their Redis: their CPU times and
    /// RSS are summed.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Worker threads of the generator (1: a current-thread runtime, the
    /// fastest when the generator is pinned to one core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl Common {
    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    pub(crate) fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    /// Let the load run for the warm-up, then measure one window with
    /// `measuring` set (the connection tasks count and record only then).
    pub(crate) async fn measure(&self, measuring: &AtomicBool) -> WindowEnd {
        tokio::time::sleep(self.warmup()).await;
        measuring.store(true, Ordering::Relaxed);
        let window = Window::start(&self.server_pid);
        tokio::time::sleep(self.duration()).await;
        let end = window.end();
        measuring.store(false, Ordering::Relaxed);
        end
    }
}

type BenchResult = Result<Value, Box<dyn std::error::Error>>;

/// Run one scenario on its own runtime and print its report.
pub fn run(scenario: Scenario) -> Result<(), Box<dyn std::error::Error>> {
    let common = match &scenario {
        Scenario::Echo(a) => &a.common,
        Scenario::Fanout(a) => &a.common,
        Scenario::Connect(a) => &a.common,
        Scenario::Idle(a) => &a.common,
        Scenario::Bus(a) => &a.common,
    };
    raise_open_files_limit();
    let runtime = if common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(common.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(async move {
        match scenario {
            Scenario::Echo(args) => echo::run(args).await,
            Scenario::Fanout(args) => fanout::run(args).await,
            Scenario::Connect(args) => connect::run(args).await,
            Scenario::Idle(args) => idle::run(args).await,
            Scenario::Bus(args) => bus::run(args).await,
        }
    })?;
    println!("{report}");
    Ok(())
}

/// Allow as many open files as the hard limit does: a generator holding
/// 15,000 connections needs more than the usual soft limit of 1,024.
pub(crate) fn raise_open_files_limit() {
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < hard
        && let Err(err) = rlimit::Resource::NOFILE.set(hard, hard)
    {
        eprintln!("could not raise the open-files limit from {soft} to {hard}: {err}");
    }
}

/// CPU time and memory of a process (or the sum of several), read from `/proc`.
#[derive(Debug, Clone)]
pub(crate) struct ProcessProbe {
    pids: Vec<u32>,
}

/// What a probe read at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessSample {
    /// User + system CPU time of all the process's threads, in microseconds.
    pub cpu_us: u64,
    pub rss_kib: u64,
}

/// `/proc/PID/stat` counts CPU time in clock ticks of 1/100 s on Linux
/// (`sysconf(_SC_CLK_TCK)` is 100 on every architecture Linux supports today).
const CLOCK_TICK_US: u64 = 10_000;

impl ProcessProbe {
    /// A probe of the sum of `pids`, or of nothing if there are none.
    pub(crate) fn new(pids: &[u32]) -> Self {
        ProcessProbe {
            pids: pids.to_vec(),
        }
    }

    /// The generator itself.
    pub(crate) fn this_process() -> Self {
        ProcessProbe {
            pids: vec![std::process::id()],
        }
    }

    /// The sum over the probed processes; `None` if there are none or one
    /// of them cannot be read (a sum missing a process would mislead).
    pub(crate) fn sample(&self) -> Option<ProcessSample> {
        let mut total: Option<ProcessSample> = None;
        for &pid in &self.pids {
            let one = Self::sample_one(pid)?;
            let sum = total.get_or_insert_with(ProcessSample::default);
            sum.cpu_us += one.cpu_us;
            sum.rss_kib += one.rss_kib;
        }
        total
    }

    fn sample_one(pid: u32) -> Option<ProcessSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces), from field 3.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
        Some(ProcessSample {
            cpu_us: ticks * CLOCK_TICK_US,
            rss_kib,
        })
    }
}

/// The measured window: wall time and both processes' CPU.
#[derive(Debug)]
pub(crate) struct Window {
    started: Instant,
    server: ProcessProbe,
    server_start: Option<ProcessSample>,
    client_start: Option<ProcessSample>,
}

/// What a window measured.
#[derive(Debug)]
pub(crate) struct WindowEnd {
    pub secs: f64,
    pub server_cpu_us: Option<u64>,
    pub server_rss_kib: Option<u64>,
    pub client_cpu_us: Option<u64>,
}

impl Window {
    pub(crate) fn start(server_pids: &[u32]) -> Self {
        let server = ProcessProbe::new(server_pids);
        Window {
            started: Instant::now(),
            server_start: server.sample(),
            client_start: ProcessProbe::this_process().sample(),
            server,
        }
    }

    pub(crate) fn end(&self) -> WindowEnd {
        let server_end = self.server.sample();
        let client_end = ProcessProbe::this_process().sample();
        let cpu = |a: Option<ProcessSample>, b: Option<ProcessSample>| {
            Some(b?.cpu_us.saturating_sub(a?.cpu_us))
        };
        WindowEnd {
            secs: self.started.elapsed().as_secs_f64(),
            server_cpu_us: cpu(self.server_start, server_end),
            server_rss_kib: server_end.map(|s| s.rss_kib),
            client_cpu_us: cpu(self.client_start, client_end),
        }
    }
}

impl WindowEnd {
    /// `rate`, `server_cpu_us_per_op`, `client_cpu_us_per_op` and the window's
    /// length, added to `report` for `ops` operations.
    pub(crate) fn add_to(&self, report: &mut Map<String, Value>, ops: u64, rate_key: &str) {
        report.insert("window_secs".into(), json!(round3(self.secs)));
        report.insert(rate_key.into(), json!(round3(ops as f64 / self.secs)));
        let per_op = |cpu: Option<u64>| match cpu {
            Some(cpu) if ops > 0 => json!(round3(cpu as f64 / ops as f64)),
            _ => Value::Null,
        };
        report.insert("server_cpu_us_per_op".into(), per_op(self.server_cpu_us));
        report.insert(
            "server_cpu_share".into(),
            match self.server_cpu_us {
                Some(cpu) => json!(round3(cpu as f64 / 1e6 / self.secs)),
                None => Value::Null,
            },
        );
        report.insert("client_cpu_us_per_op".into(), per_op(self.client_cpu_us));
        if let Some(rss) = self.server_rss_kib {
            report.insert("server_rss_kib".into(), json!(rss));
        }
    }
}

/// Latencies in microseconds, 3 significant digits, up to an hour.
pub(crate) fn new_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One histogram of the per-connection ones.
pub(crate) fn merge_histograms(
    histograms: &[Arc<Mutex<hdrhistogram::Histogram<u64>>>],
) -> Result<hdrhistogram::Histogram<u64>, hdrhistogram::AdditionError> {
    let mut merged = new_histogram();
    for h in histograms {
        merged.add(&*h.lock().expect("histogram lock"))?;
    }
    Ok(merged)
}

/// p50 / p99 / p999 / max into `report`.
pub(crate) fn add_percentiles(report: &mut Map<String, Value>, h: &hdrhistogram::Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    report.insert("p50_us".into(), json!(h.value_at_quantile(0.5)));
    report.insert("p99_us".into(), json!(h.value_at_quantile(0.99)));
    report.insert("p999_us".into(), json!(h.value_at_quantile(0.999)));
    report.insert("max_us".into(), json!(h.max()));
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A text payload of `size` bytes that looks like a JSON chat message, so
/// that permessage-deflate has something realistic to compress.
pub(crate) fn json_like_text(size: usize) -> String {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut text = String::with_capacity(size + 64);
    let mut i = 0usize;
    text.push('[');
    while text.len() < size {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#"{{"id":{},"user":"{}","text":"{} {} {}","ts":{}}}"#,
            1000 + i,
            WORDS[i % 16],
            WORDS[(i * 7) % 16],
            WORDS[(i * 3 + 1) % 16],
            WORDS[(i * 5 + 2) % 16],
            1_700_000_000 + i * 37
        ));
        i += 1;
    }
    text.truncate(size);
    text
}

/// Print a progress line to stderr.
pub(crate) fn progress(what: std::fmt::Arguments<'_>) {
    eprintln!("bench: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_like_text_has_the_exact_size() {
        for size in [0, 1, 20, 1024, 65536] {
            assert_eq!(json_like_text(size).len(), size);
        }
    }

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        scenario: Scenario,
    }

    #[test]
    fn websocket_scenarios_take_headers_and_echo_a_payload_file() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let names = |headers: &[Header]| {
            headers
                .iter()
                .map(|h| format!("{}={}", h.name(), h.value()))
                .collect::<Vec<_>>()
        };
        let cli = Cli::try_parse_from([
            "bench",
            "connect",
            "--header",
            "Authorization: Bearer t",
            "-H",
            "X-A: b",
        ])
        .expect("parses");
        let Scenario::Connect(args) = cli.scenario else {
            panic!("not connect")
        };
        assert_eq!(
            names(&args.upgrade.headers),
            ["Authorization=Bearer t", "X-A=b"]
        );
        let cli = Cli::try_parse_from([
            "bench",
            "echo",
            "-H",
            "Authorization: Bearer t",
            "--payload-file",
            "m.json",
        ])
        .expect("parses");
        let Scenario::Echo(args) = cli.scenario else {
            panic!("not echo")
        };
        assert_eq!(names(&args.upgrade.headers), ["Authorization=Bearer t"]);
        assert_eq!(
            args.payload_file.as_deref(),
            Some(std::path::Path::new("m.json"))
        );
        // A malformed header is a usage error, not a silently dropped one.
        assert!(Cli::try_parse_from(["bench", "echo", "--header", "no colon"]).is_err());
        for scenario in ["fanout", "idle"] {
            assert!(Cli::try_parse_from(["bench", scenario, "-H", "X-A: b"]).is_ok());
        }
    }

    #[test]
    fn echo_takes_shape_and_deflate_offer_with_deflate_as_alias() {
        use clap::Parser;
        let echo = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["bench", "echo"][..], args].concat())?;
            let Scenario::Echo(args) = cli.scenario else {
                panic!("not echo")
            };
            Ok::<_, clap::Error>(args)
        };
        let default = echo(&[]).expect("parses");
        assert_eq!(
            (default.shape, default.offer()),
            (Shape::Burst, DeflateOffer::None)
        );
        let args = echo(&["--shape", "per-message", "--deflate-offer", "browser"]).expect("parses");
        assert_eq!(
            (args.shape, args.offer()),
            (Shape::PerMessage, DeflateOffer::Browser)
        );
        assert_eq!(
            echo(&["--deflate"]).expect("parses").offer(),
            DeflateOffer::Plain
        );
        assert!(echo(&["--deflate", "--deflate-offer", "browser"]).is_err());
        assert!(echo(&["--shape", "writev"]).is_err());
        let cli = Cli::try_parse_from([
            "bench",
            "idle",
            "--deflate-offer",
            "browser",
            "--exchange-size",
            "300",
            "--tls-ca",
            "ca.pem",
        ])
        .expect("parses");
        let Scenario::Idle(idle) = cli.scenario else {
            panic!("not idle")
        };
        assert_eq!(
            (idle.deflate_offer, idle.exchange_size),
            (DeflateOffer::Browser, 300)
        );
        assert!(idle.upgrade.tls_ca.is_some());
    }

    #[test]
    fn probes_read_this_process() {
        let sample = ProcessProbe::this_process()
            .sample()
            .expect("/proc readable");
        assert!(sample.rss_kib > 0);
        assert!(ProcessProbe::new(&[]).sample().is_none());
        let me = std::process::id();
        let twice = ProcessProbe::new(&[me, me])
            .sample()
            .expect("/proc readable");
        // Summed: about twice the one sample (RSS moves a little in between).
        assert!(twice.rss_kib >= sample.rss_kib * 3 / 2);
        assert!(ProcessProbe::new(&[me, u32::MAX]).sample().is_none());
    }
}
