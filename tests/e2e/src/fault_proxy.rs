//! A fault-injecting TCP proxy for the end-to-end tests (this machine's kernel has no netem):
//! placed between agents and the controller, it adds latency and jitter, caps bandwidth, resets
//! connections after a random number of bytes, and can turn into a black hole that accepts
//! connections and holds them open without passing a byte either way (what a dead NAT entry or
//! a pulled cable looks like to both ends: half-open connections), or resets every open
//! connection on demand. Faults can change while traffic flows; each connection draws its own
//! cut point.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the proxy does to traffic; change it with [`FaultProxy::set`].
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added to every piece of data, each way.
    pub latency: Duration,
    /// Up to this much more, drawn for each piece (order is kept).
    pub jitter: Duration,
    /// Bytes per second each way, per connection (None: no cap).
    pub bandwidth: Option<u64>,
    /// Reset a connection (RST) once this many more bytes, drawn in the range for each
    /// connection when cuts are first asked for, have passed through it (both ways together).
    pub cut_after: Option<(u64, u64)>,
    /// Accept and hold connections, pass nothing.
    pub black_hole: bool,
}

/// What the proxy saw.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    /// Raised by [`FaultProxy::cut_all`]: connections accepted before it are reset.
    cut_generation: AtomicU64,
    pub resets: AtomicU64,
    pub bytes_down: AtomicU64,
    pub bytes_up: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `host:port` to point clients at.
    pub address: String,
    faults: Arc<Mutex<Faults>>,
    pub counters: Arc<Counters>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy listener");
        let address = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let counters = Arc::new(Counters::default());
        runtime.spawn(accept(
            listener,
            upstream.to_string(),
            faults.clone(),
            counters.clone(),
        ));
        FaultProxy {
            address,
            faults,
            counters,
            runtime: Some(runtime),
        }
    }

    /// Changes the faults; connections already open follow the new settings from their next
    /// piece of data (a cut point, drawn at connect, stays).
    pub fn set(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.faults.lock().unwrap());
    }

    pub fn resets(&self) -> u64 {
        self.counters.resets.load(Ordering::Relaxed)
    }

    /// Resets every connection open now (new ones are not affected).
    pub fn cut_all(&self) {
        self.counters.cut_generation.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept(
    listener: TcpListener,
    upstream: String,
    faults: Arc<Mutex<Faults>>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let (upstream, faults, counters) = (upstream.clone(), faults.clone(), counters.clone());
        tokio::spawn(async move {
            // A black hole holds the client and never dials upstream.
            while faults.lock().unwrap().black_hole {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            relay(client, server, faults, counters).await;
        });
    }
}

/// Pumps both ways until either side closes or the cut point is reached (then both sides get a
/// reset).
async fn relay(
    client: TcpStream,
    server: TcpStream,
    faults: Arc<Mutex<Faults>>,
    counters: Arc<Counters>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let cut = new_flag();
    let generation = counters.cut_generation.load(Ordering::Relaxed);
    let passed = Arc::new(AtomicU64::new(0));
    let cut_at = Arc::new(AtomicU64::new(NO_CUT));
    let down = pump(
        server_read,
        client_write,
        Direction::Down,
        Cut {
            at: cut_at.clone(),
            passed: passed.clone(),
            done: cut.clone(),
            generation,
        },
        faults.clone(),
        counters.clone(),
    );
    let up = pump(
        client_read,
        server_write,
        Direction::Up,
        Cut {
            at: cut_at,
            passed,
            done: cut.clone(),
            generation,
        },
        faults,
        counters.clone(),
    );
    let (down_halves, up_halves) = tokio::join!(down, up);
    if let (Some((server_read, client_write)), Some((client_read, server_write))) =
        (down_halves, up_halves)
    {
        counters.resets.fetch_add(1, Ordering::Relaxed);
        // SO_LINGER 0: closing sends RST, not FIN, to both ends.
        for stream in [
            client_read.reunite(client_write),
            server_read.reunite(server_write),
        ]
        .into_iter()
        .flatten()
        {
            let _ = stream.set_zero_linger();
        }
    }
}

fn new_flag() -> Arc<std::sync::atomic::AtomicBool> {
    Arc::new(std::sync::atomic::AtomicBool::new(false))
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    /// From the upstream (the controller) to the client.
    Down,
    Up,
}

/// No cut point drawn yet.
const NO_CUT: u64 = u64::MAX;

/// A connection's cut point, the bytes both directions passed so far, and whether it was cut.
struct Cut {
    at: Arc<AtomicU64>,
    passed: Arc<AtomicU64>,
    done: Arc<std::sync::atomic::AtomicBool>,
    /// The proxy's cut generation when the connection was accepted.
    generation: u64,
}

/// A direction's read half and the other direction's write half, handed back after a cut.
type Halves = Option<(
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
)>;

/// One direction. Reads pieces, stamps each with when it may be delivered (latency, jitter,
/// bandwidth), and a writer delivers them in order. Returns its read and write halves when the
/// connection is cut, so that the caller can reset both streams.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: Direction,
    cut: Cut,
    faults: Arc<Mutex<Faults>>,
    counters: Arc<Counters>,
) -> Halves {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        to
    };
    let cut_done = cut.done.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut next_free = Instant::now();
        loop {
            if counters.cut_generation.load(Ordering::Relaxed) != cut.generation {
                cut.done.store(true, Ordering::Relaxed);
            }
            if cut.done.load(Ordering::Relaxed) {
                break;
            }
            let n = tokio::select! {
                read = from.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                // Notice a cut made by the other direction.
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            };
            let settings = faults.lock().unwrap().clone();
            if settings.black_hole {
                // Swallowed: the other end hears nothing, and no FIN either.
                continue;
            }
            let mut n = n;
            let before = cut.passed.fetch_add(n as u64, Ordering::Relaxed);
            if let Some((lo, hi)) = settings.cut_after {
                // Drawn once per connection, counted from the bytes it had passed then.
                let drawn = before + rand::rng().random_range(lo..=hi.max(lo));
                let _ =
                    cut.at
                        .compare_exchange(NO_CUT, drawn, Ordering::Relaxed, Ordering::Relaxed);
            }
            let limit = cut.at.load(Ordering::Relaxed);
            if limit != NO_CUT && before + n as u64 >= limit {
                n = limit.saturating_sub(before) as usize;
                cut.done.store(true, Ordering::Relaxed);
            }
            let counter = match direction {
                Direction::Down => &counters.bytes_down,
                Direction::Up => &counters.bytes_up,
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let now = Instant::now();
            let jitter = if settings.jitter.is_zero() {
                Duration::ZERO
            } else {
                settings.jitter.mul_f64(rand::rng().random::<f64>())
            };
            // The link is busy until the bytes before have gone through the cap.
            let start = next_free.max(now);
            let on_the_wire = settings.bandwidth.map_or(Duration::ZERO, |rate| {
                Duration::from_secs_f64(n as f64 / rate.max(1) as f64)
            });
            next_free = start + on_the_wire;
            let due = next_free + settings.latency + jitter;
            if n > 0 && tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
            if cut.done.load(Ordering::Relaxed) {
                break;
            }
        }
        drop(tx);
        from
    };
    let (to, from) = tokio::join!(writer, reader);
    if cut_done.load(Ordering::Relaxed) {
        Some((from, to))
    } else {
        None
    }
}
