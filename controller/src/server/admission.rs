//! Who may hold a connection to the controller, and for how long before proving who it is: the
//! accept loop of every listener (agents' link and the CLI; the metrics endpoint), with a
//! deadline for the TLS handshake, a deadline for a connection that has shaken hands but not yet
//! made an authenticated call, caps on such unauthenticated connections (overall and per source
//! address), and a reserve of file descriptors, so that peers that connect and never speak can
//! neither exhaust the process's descriptors nor stop the loop. Past a cap a connection is closed
//! at once; every refusal, cut and accept error is counted in `/metrics` and logged at a bounded
//! rate.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics;

/// How long a peer may hold a connection before it has proved who it is, and how many such
/// connections there may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accept to a finished TLS handshake.
    pub handshake_timeout: Duration,
    /// From the handshake to the first authenticated call (an agent certificate, an admin or
    /// enrollment token); for the metrics endpoint, between two reads.
    pub unauthenticated_idle: Duration,
    /// Connections not yet authenticated, handshakes included, at once.
    pub max_unauthenticated: usize,
    /// The same, from one source address.
    pub max_unauthenticated_per_source: usize,
    /// Descriptors kept free of connections: the store, artifact reads and logs need them.
    pub descriptor_reserve: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(5),
            unauthenticated_idle: Duration::from_secs(20),
            max_unauthenticated: 1024,
            max_unauthenticated_per_source: 64,
            descriptor_reserve: 512,
        }
    }
}

/// Why a new connection was closed at once, or which cap made an older one make way for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every descriptor but the reserve holds a connection.
    Descriptors,
    /// `max_unauthenticated` connections are still unauthenticated (and none could make way).
    Unauthenticated,
    /// `max_unauthenticated_per_source` of them come from this address (and none could make
    /// way).
    Source,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [
        Refusal::Descriptors,
        Refusal::Unauthenticated,
        Refusal::Source,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Descriptors => "descriptors",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Source => "source",
        }
    }
}

/// At most `lines` log lines per `per`; what is left out is counted and said with the next line.
#[derive(Debug)]
pub struct LogBudget {
    per: Duration,
    lines: u32,
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(lines: u32, per: Duration) -> LogBudget {
        LogBudget {
            per,
            lines,
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now (`n` lines were left out since the last one),
    /// `None` when this one must be left out.
    pub fn take(&mut self, now: Instant) -> Option<u64> {
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) >= self.per {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < self.lines {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    unauthenticated: usize,
    per_source: HashMap<IpAddr, SourceSlots>,
}

/// One source's unauthenticated connections: how many, and which, oldest first (entries of
/// connections that authenticated or closed since are skipped, and compacted now and then).
#[derive(Debug, Default)]
struct SourceSlots {
    held: usize,
    oldest_first: VecDeque<Weak<Slot>>,
}

impl Counts {
    /// Closes the oldest unauthenticated connection from `source`: it leaves the counts now,
    /// and its reads fail once woken. `None` if the source holds none.
    fn evict_oldest(&mut self, source: IpAddr) -> Option<Arc<Slot>> {
        let slots = self.per_source.get_mut(&source)?;
        // Connections that went away or authenticated since are dropped from the queue.
        slots.oldest_first.retain(|w| {
            w.upgrade()
                .is_some_and(|s| s.unauthenticated.load(Ordering::Acquire))
        });
        // The oldest that has not yet said a whole ClientHello goes first (a silent peer), then
        // the oldest at all: a client that speaks TLS keeps its place through a flood from its
        // own address while its handshake runs.
        let victim = slots
            .oldest_first
            .iter()
            .position(|w| w.upgrade().is_some_and(|s| !s.has_spoken()))
            .unwrap_or(0);
        let slot = slots.oldest_first.remove(victim)?.upgrade()?;
        if !slot.unauthenticated.swap(false, Ordering::AcqRel) {
            return None;
        }
        slot.evicted.store(true, Ordering::Release);
        slots.held -= 1;
        self.unauthenticated -= 1;
        if slots.held == 0 {
            self.per_source.remove(&source);
        }
        Some(slot)
    }

    /// The source holding the most unauthenticated connections.
    fn heaviest_source(&self) -> Option<IpAddr> {
        self.per_source
            .iter()
            .max_by_key(|(_, slots)| slots.held)
            .map(|(source, _)| *source)
    }
}

/// The connections of one listener: how many are open and unauthenticated, and by whom.
#[derive(Debug)]
pub struct Admission {
    listener: &'static str,
    limits: ConnectionLimits,
    max_open: usize,
    counts: Mutex<Counts>,
    /// Unauthenticated connections by peer address, so an authenticated call can find its own.
    waiting: Mutex<HashMap<SocketAddr, Weak<Slot>>>,
    refusal_log: Mutex<LogBudget>,
    accept_log: Mutex<LogBudget>,
}

/// The longest a handshake may take in all, beyond the time it may wait for its peer: the rest
/// is the server's (a reconnect storm's queue for the CPU).
const HANDSHAKE_BACKSTOP: Duration = Duration::from_secs(120);

/// What a peer must have sent to count as speaking TLS: the smallest ClientHello a TLS 1.3
/// client sends with a key share is well over this.
const SPOKEN_BYTES: usize = 128;

/// The process's open-file limit (soft), or a conservative guess.
fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// An address as one source: an IPv4 peer seen through an IPv6 socket counts as itself, and an
/// IPv6 peer by its /64 (one site's or one host's prefix, which holds as many addresses as it
/// likes).
fn source_of(peer: SocketAddr) -> IpAddr {
    match peer.ip().to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

impl Admission {
    /// The admission of the listener named `listener` ("link", "metrics"), with connections
    /// capped at the open-file limit less the reserve.
    pub fn new(listener: &'static str, limits: ConnectionLimits) -> Arc<Admission> {
        let limit = open_file_limit();
        let max_open = limit
            .saturating_sub(limits.descriptor_reserve)
            .max(limit / 2)
            .max(1) as usize;
        Arc::new(Admission {
            listener,
            limits,
            max_open,
            counts: Mutex::default(),
            waiting: Mutex::default(),
            refusal_log: Mutex::new(LogBudget::new(10, Duration::from_secs(60))),
            accept_log: Mutex::new(LogBudget::new(10, Duration::from_secs(60))),
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Connections open now, and how many of them are not authenticated yet.
    pub fn counts(&self) -> (usize, usize) {
        let counts = self.counts.lock().expect("admission counts");
        (counts.open, counts.unauthenticated)
    }

    fn publish(&self, counts: &Counts) {
        metrics::connections(self.listener, counts.open, counts.unauthenticated);
    }

    /// A slot for a new connection from `peer`, unauthenticated, or why there is none. Past a
    /// cap the newcomer gets in and the oldest unauthenticated connection makes way: from its
    /// own source past the per-source cap, from the source holding the most past the overall
    /// one. A silent peer holds its connections longest, so it loses them first; an agent's
    /// connection authenticates within milliseconds of arriving, and a flood from its own
    /// address or from elsewhere cannot keep it out.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Arc<Slot>, Refusal> {
        let source = source_of(peer);
        let slot = Arc::new(Slot {
            admission: Arc::downgrade(self),
            peer,
            unauthenticated: AtomicBool::new(true),
            evicted: AtomicBool::new(false),
            waker: Mutex::new(None),
            read_bytes: Default::default(),
        });
        let evicted = {
            let mut counts = self.counts.lock().expect("admission counts");
            if counts.open >= self.max_open {
                return Err(Refusal::Descriptors);
            }
            let held = counts.per_source.get(&source).map_or(0, |s| s.held);
            let evicted = if held >= self.limits.max_unauthenticated_per_source {
                Some((counts.evict_oldest(source), Refusal::Source))
            } else if counts.unauthenticated >= self.limits.max_unauthenticated {
                let heaviest = counts.heaviest_source();
                Some((
                    heaviest.and_then(|h| counts.evict_oldest(h)),
                    Refusal::Unauthenticated,
                ))
            } else {
                None
            };
            if let Some((None, refusal)) = evicted {
                return Err(refusal);
            }
            let slots = counts.per_source.entry(source).or_default();
            slots.held += 1;
            slots.oldest_first.push_back(Arc::downgrade(&slot));
            if slots.oldest_first.len() > 2 * slots.held + 16 {
                slots.oldest_first.retain(|w| {
                    w.upgrade()
                        .is_some_and(|s| s.unauthenticated.load(Ordering::Acquire))
                });
            }
            counts.unauthenticated += 1;
            counts.open += 1;
            self.publish(&counts);
            evicted.and_then(|(slot, why)| slot.map(|s| (s, why)))
        };
        {
            let mut waiting = self.waiting.lock().expect("admission waiting");
            if let Some((old, _)) = &evicted {
                if waiting
                    .get(&old.peer)
                    .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(old)))
                {
                    waiting.remove(&old.peer);
                }
            }
            waiting.insert(peer, Arc::downgrade(&slot));
        }
        if let Some((old, why)) = evicted {
            old.wake();
            self.made_way(old.peer, why);
        }
        Ok(slot)
    }

    /// The connection from `peer` made an authenticated call: it no longer counts against the
    /// caps or its deadline. A peer not waiting (already authenticated, gone) is a no-op.
    pub fn authenticated(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        let slot = self
            .waiting
            .lock()
            .expect("admission waiting")
            .get(&peer)
            .and_then(Weak::upgrade);
        if let Some(slot) = slot {
            slot.authenticate();
        }
    }

    fn release(&self, slot: &Slot, was_unauthenticated: bool, closing: bool) {
        let mut counts = self.counts.lock().expect("admission counts");
        if was_unauthenticated {
            counts.unauthenticated = counts.unauthenticated.saturating_sub(1);
            let source = source_of(slot.peer);
            if let Some(slots) = counts.per_source.get_mut(&source) {
                slots.held -= 1;
                if slots.held == 0 {
                    counts.per_source.remove(&source);
                }
            }
            let mut waiting = self.waiting.lock().expect("admission waiting");
            if waiting
                .get(&slot.peer)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), slot))
            {
                waiting.remove(&slot.peer);
            }
        }
        if closing {
            counts.open = counts.open.saturating_sub(1);
        }
        self.publish(&counts);
    }

    /// Whether a refusal or eviction line may be logged now (`Some(lines left out before it)`).
    fn refusal_line(&self) -> Option<u64> {
        self.refusal_log
            .lock()
            .expect("refusal log")
            .take(Instant::now())
    }

    /// A connection closed at once: counted, and logged within the budget.
    fn refused(&self, peer: SocketAddr, refusal: Refusal) {
        metrics::connection_refused(self.listener, refusal.as_str());
        let Some(left_out) = self.refusal_line() else {
            return;
        };
        let why = match refusal {
            Refusal::Descriptors => format!(
                "{} connections are open, all the open-file limit allows beside a reserve of {}",
                self.max_open, self.limits.descriptor_reserve
            ),
            Refusal::Unauthenticated => format!(
                "{} connections have not authenticated yet (the limit)",
                self.limits.max_unauthenticated
            ),
            Refusal::Source => format!(
                "{} connections from this address have not authenticated yet (the limit per source)",
                self.limits.max_unauthenticated_per_source
            ),
        };
        tracing::warn!(listener = self.listener, %peer, left_out, "refused a connection: {why}");
    }

    /// The oldest unauthenticated connection from `peer` was closed to admit a new one: counted
    /// and logged within the budget.
    fn made_way(&self, peer: SocketAddr, cap: Refusal) {
        metrics::connection_cut(self.listener, "evicted");
        let Some(left_out) = self.refusal_line() else {
            return;
        };
        let why = match cap {
            Refusal::Source => format!(
                "{} connections from its address had not authenticated yet (the limit per source)",
                self.limits.max_unauthenticated_per_source
            ),
            _ => format!(
                "{} connections had not authenticated yet (the limit), the most of them from its address",
                self.limits.max_unauthenticated
            ),
        };
        tracing::warn!(listener = self.listener, %peer, left_out, "closed the oldest unauthenticated connection to admit a new one: {why}");
    }

    /// An accept error: counted, logged within the budget; the caller backs off.
    fn accept_failed(&self, error: &io::Error) {
        let kind = accept_error_kind(error);
        metrics::accept_error(self.listener, kind);
        if let Some(left_out) = self
            .accept_log
            .lock()
            .expect("accept log")
            .take(Instant::now())
        {
            tracing::error!(listener = self.listener, %error, kind, left_out, "cannot accept connections; backing off");
        }
    }
}

/// The name an accept error is counted under.
fn accept_error_kind(error: &io::Error) -> &'static str {
    use nix::errno::Errno;
    match error.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EMFILE) => "EMFILE",
        Some(Errno::ENFILE) => "ENFILE",
        Some(Errno::ENOBUFS) => "ENOBUFS",
        Some(Errno::ENOMEM) => "ENOMEM",
        _ => "other",
    }
}

/// One admitted connection's place in the counts; released when the connection closes.
#[derive(Debug)]
pub struct Slot {
    admission: Weak<Admission>,
    peer: SocketAddr,
    unauthenticated: AtomicBool,
    /// Closed to make way for a newer connection (its reads fail).
    evicted: AtomicBool,
    /// The task reading the connection, to wake when it is evicted.
    waker: Mutex<Option<std::task::Waker>>,
    /// Bytes read from the peer so far.
    read_bytes: std::sync::atomic::AtomicUsize,
}

impl Slot {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_authenticated(&self) -> bool {
        !self.unauthenticated.load(Ordering::Acquire)
    }

    /// Whether the peer has sent at least a TLS ClientHello's worth of bytes (a client that
    /// speaks TLS, as opposed to one that connected and went silent, or sent a few bytes).
    fn has_spoken(&self) -> bool {
        self.read_bytes.load(Ordering::Relaxed) >= SPOKEN_BYTES
    }

    /// Whether it was closed to make way for a newer connection.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.lock().expect("slot waker").take() {
            waker.wake();
        }
    }

    /// The connection proved who it is: it leaves the unauthenticated counts.
    pub fn authenticate(&self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            // The waker may be the finished handshake task's: holding it would keep that task's
            // memory (its future, a few KB) for the life of the connection.
            self.waker.lock().expect("slot waker").take();
            if let Some(admission) = self.admission.upgrade() {
                admission.release(self, true, false);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let was_unauthenticated = self.unauthenticated.swap(false, Ordering::AcqRel);
        if let Some(admission) = self.admission.upgrade() {
            admission.release(self, was_unauthenticated, true);
        }
    }
}

/// What a deadline cuts, for the metric label and the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Unauthenticated,
    Idle,
}

/// A TCP connection that fails its reads once it has waited too long for its peer while it is
/// unauthenticated (in idle mode: once it has read nothing for a while), so the server closes
/// it; its slot is released when it is dropped. Only the time spent waiting for the peer counts
/// (from a read that found nothing until data arrives), not the time the server took to get to
/// it: in a reconnect storm of thousands of agents on two cores a handshake may wait seconds for
/// the CPU, and that must not cut it.
#[derive(Debug)]
pub struct Guarded {
    stream: TcpStream,
    slot: Arc<Slot>,
    listener: &'static str,
    deadline: Pin<Box<Sleep>>,
    phase: Phase,
    /// How long this phase may wait for the peer in all.
    limit: Duration,
    /// How long it has waited so far (closed waits).
    waited: Duration,
    /// Since when it waits now, if it does.
    waiting_since: Option<tokio::time::Instant>,
    cut: bool,
}

impl Guarded {
    fn new(stream: TcpStream, slot: Arc<Slot>, listener: &'static str, first: Duration) -> Self {
        Guarded {
            stream,
            slot,
            listener,
            deadline: Box::pin(tokio::time::sleep(first)),
            phase: Phase::Handshake,
            limit: first,
            waited: Duration::ZERO,
            waiting_since: None,
            cut: false,
        }
    }

    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    fn enter(&mut self, phase: Phase, limit: Duration) {
        self.phase = phase;
        self.limit = limit;
        self.waited = Duration::ZERO;
        self.waiting_since = None;
    }

    /// The handshake is done: from now on it has `limit` of waiting for the peer to make an
    /// authenticated call.
    fn await_authentication(&mut self, limit: Duration) {
        self.enter(Phase::Unauthenticated, limit);
    }

    /// Idle mode: cut once it has waited `limit` for the peer since its last read (a plain
    /// HTTP listener).
    fn cut_when_idle(&mut self, limit: Duration) {
        self.enter(Phase::Idle, limit);
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.slot.is_evicted() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make way for a newer unauthenticated connection",
            )));
        }
        let watched = this.phase == Phase::Idle || !this.slot.is_authenticated();
        if watched {
            *this.slot.waker.lock().expect("slot waker") = Some(cx.waker().clone());
        }
        if this.cut {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "cut")));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        this.slot.read_bytes.fetch_add(got, Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        if read.is_pending() {
            if !watched {
                return Poll::Pending;
            }
            if this.waiting_since.is_none() {
                this.waiting_since = Some(now);
                let left = this.limit.saturating_sub(this.waited);
                this.deadline.as_mut().reset(now + left);
            }
            if this.deadline.as_mut().poll(cx).is_ready() {
                let (label, what) = match this.phase {
                    Phase::Handshake => ("handshake", "no TLS handshake in time"),
                    Phase::Unauthenticated => ("unauthenticated", "no authenticated call in time"),
                    Phase::Idle => ("idle", "idle for too long"),
                };
                this.cut = true;
                metrics::connection_cut(this.listener, label);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
            }
            return Poll::Pending;
        }
        if let Some(since) = this.waiting_since.take() {
            this.waited += now.saturating_duration_since(since);
        }
        if this.phase == Phase::Idle && got > 0 {
            this.waited = Duration::ZERO;
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts on `listener` until `stop`, handing each admitted connection to `admitted`; refused
/// ones are closed at once. An accept error (out of descriptors, most likely) backs off from
/// 5 ms to a second, so the loop neither spins nor stops.
pub async fn accept_loop(
    listener: TcpListener,
    admission: Arc<Admission>,
    stop: impl Future<Output = ()>,
    mut admitted: impl FnMut(Guarded),
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(5);
    let mut backoff = FIRST_BACKOFF;
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = FIRST_BACKOFF;
                match admission.admit(peer) {
                    Ok(slot) => {
                        // No Nagle: a reply's last small frame must not wait for the peer's
                        // delayed ACK (measured: 40 ms stalls on one artifact chunk in five).
                        let _ = stream.set_nodelay(true);
                        let limit = admission.limits.handshake_timeout;
                        admitted(Guarded::new(stream, slot, admission.listener, limit));
                    }
                    Err(refusal) => {
                        drop(stream);
                        admission.refused(peer, refusal);
                    }
                }
            }
            Err(error) => {
                admission.accept_failed(&error);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A finished TLS connection, boxed: hyper's connection future keeps its IO in more than one of
/// its states, and a rustls stream is 1.3 KB inline (measured with 10,000 agents: 7 KB a
/// connection more unboxed), as tonic's own TLS path boxes it too.
pub struct TlsConnection(Box<tokio_rustls::server::TlsStream<Guarded>>);

impl Connected for TlsConnection {
    type ConnectInfo = <tokio_rustls::server::TlsStream<Guarded> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// The link listener's connections after their TLS handshake, for tonic: a handshake that takes
/// longer than the limit is cut; a connection whose client presented a certificate the verifier
/// accepted is authenticated at once, any other has `unauthenticated_idle` to make an
/// authenticated call.
pub fn tls_incoming(
    listener: TcpListener,
    admission: Arc<Admission>,
    acceptor: tokio_rustls::TlsAcceptor,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (tx, rx) = mpsc::channel(256);
    let closed = tx.clone();
    let limits = admission.limits.clone();
    tokio::spawn(accept_loop(
        listener,
        admission,
        async move { closed.closed().await },
        move |guarded| {
            let (tx, acceptor, limits) = (tx.clone(), acceptor.clone(), limits.clone());
            tokio::spawn(async move {
                let Some(mut tls) = accept_tls(guarded, &acceptor, &limits).await else {
                    return;
                };
                let (guarded, session) = tls.get_mut();
                if session.peer_certificates().is_some_and(|c| !c.is_empty()) {
                    guarded.slot.authenticate();
                }
                let _ = tx.send(Ok(TlsConnection(Box::new(tls)))).await;
            });
        },
    ));
    ReceiverStream::new(rx)
}

/// One connection's TLS handshake, within the handshake deadline (the link's and the console's
/// listeners): the finished stream then has `unauthenticated_idle` of waiting for its peer until
/// it proves who it is ([`Slot::authenticate`]: a client certificate the verifier accepted, an
/// authenticated call, a console session). `None` when the handshake failed or took too long.
pub async fn accept_tls(
    guarded: Guarded,
    acceptor: &tokio_rustls::TlsAcceptor,
    limits: &ConnectionLimits,
) -> Option<tokio_rustls::server::TlsStream<Guarded>> {
    let listener = guarded.listener;
    // The peer's share is cut by the guard (time waiting for it); this backstop ends a handshake
    // the server could not finish in a long while.
    match tokio::time::timeout(
        limits.handshake_timeout + HANDSHAKE_BACKSTOP,
        acceptor.accept(guarded),
    )
    .await
    {
        Err(_) => {
            metrics::connection_cut(listener, "handshake");
            None
        }
        // The verifier counted and logged what it could attribute.
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Ok(Ok(mut tls)) => {
            tls.get_mut()
                .0
                .await_authentication(limits.unauthenticated_idle);
            Some(tls)
        }
    }
}

/// A plain connection that has `limit` of waiting for its peer until a request proves who it
/// is (the console over plain HTTP).
pub fn for_unauthenticated(mut guarded: Guarded, limit: Duration) -> Guarded {
    guarded.await_authentication(limit);
    guarded
}

/// The same without TLS (`--insecure`): a connection has `unauthenticated_idle` from accept to
/// its first authenticated call.
pub fn plain_incoming(
    listener: TcpListener,
    admission: Arc<Admission>,
) -> ReceiverStream<io::Result<Guarded>> {
    let (tx, rx) = mpsc::channel(256);
    let closed = tx.clone();
    let limit = admission.limits.unauthenticated_idle;
    tokio::spawn(accept_loop(
        listener,
        admission,
        async move { closed.closed().await },
        move |mut guarded| {
            guarded.await_authentication(limit);
            if let Err(mpsc::error::TrySendError::Full(guarded)) = tx.try_send(Ok(guarded)) {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(guarded).await;
                });
            }
        },
    ));
    ReceiverStream::new(rx)
}

/// A plain HTTP listener's connection (the metrics endpoint): never authenticated, cut once it
/// has read nothing for `unauthenticated_idle`.
pub fn for_plain_http(mut guarded: Guarded, idle: Duration) -> Guarded {
    guarded.cut_when_idle(idle);
    guarded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: usize) -> ConnectionLimits {
        ConnectionLimits {
            handshake_timeout: Duration::from_millis(300),
            unauthenticated_idle: Duration::from_millis(300),
            max_unauthenticated: total,
            max_unauthenticated_per_source: per_source,
            descriptor_reserve: 64,
        }
    }

    fn peer(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn past_a_cap_the_oldest_unauthenticated_connection_makes_way() {
        let admission = Admission::new("test", limits(3, 2));
        let a1 = admission.admit(peer([10, 0, 0, 1], 1)).unwrap();
        let a2 = admission.admit(peer([10, 0, 0, 1], 2)).unwrap();
        // Past the per-source cap: the source's oldest goes, the newcomer is in.
        let a3 = admission.admit(peer([10, 0, 0, 1], 3)).unwrap();
        assert!(a1.is_evicted() && !a2.is_evicted() && !a3.is_evicted());
        assert_eq!(
            admission.counts(),
            (3, 2),
            "the evicted one is open until it closes"
        );
        // An authenticated connection is never evicted, and frees its place.
        admission.authenticated(Some(peer([10, 0, 0, 1], 2)));
        assert!(a2.is_authenticated());
        let b1 = admission.admit(peer([10, 0, 0, 2], 1)).unwrap();
        let b2 = admission.admit(peer([10, 0, 0, 2], 2)).unwrap();
        assert_eq!(admission.counts(), (5, 3));
        // Past the overall cap: the oldest of the source holding the most (10.0.0.2 holds two).
        let c1 = admission.admit(peer([10, 0, 0, 3], 1)).unwrap();
        assert!(b1.is_evicted() && !b2.is_evicted() && !a3.is_evicted());
        assert!(!a2.is_evicted(), "authenticated");
        assert_eq!(admission.counts(), (6, 3));
        // A second authentication, or one of an evicted connection, is a no-op.
        a2.authenticate();
        b1.authenticate();
        assert_eq!(admission.counts(), (6, 3));
        drop((a1, a2, a3, b1, b2, c1));
        assert_eq!(admission.counts(), (0, 0));
        assert!(admission.counts.lock().unwrap().per_source.is_empty());
        assert!(admission.waiting.lock().unwrap().is_empty());
    }

    #[test]
    fn a_connection_that_speaks_tls_keeps_its_place_over_older_silent_ones() {
        let admission = Admission::new("test", limits(10, 2));
        let talker = admission.admit(peer([10, 0, 0, 1], 1)).unwrap();
        talker.read_bytes.store(517, Ordering::Relaxed); // a ClientHello
        let silent = admission.admit(peer([10, 0, 0, 1], 2)).unwrap();
        let _newer = admission.admit(peer([10, 0, 0, 1], 3)).unwrap();
        assert!(silent.is_evicted() && !talker.is_evicted());
        // With only speakers left, the oldest goes.
        _newer.read_bytes.store(517, Ordering::Relaxed);
        let _newest = admission.admit(peer([10, 0, 0, 1], 4)).unwrap();
        assert!(talker.is_evicted());
    }

    #[test]
    fn only_descriptors_refuse_a_newcomer() {
        let mut limits = limits(3, 2);
        limits.descriptor_reserve = 0;
        let admission = Admission::new("test", limits);
        let max_open = admission.max_open;
        let held: Vec<_> = (0..max_open)
            .map(|i| {
                let slot = admission
                    .admit(peer([10, 1, (i / 250) as u8, (i % 250) as u8], 1))
                    .unwrap();
                slot.authenticate();
                slot
            })
            .collect();
        assert_eq!(
            admission.admit(peer([10, 9, 9, 9], 1)).unwrap_err(),
            Refusal::Descriptors
        );
        drop(held);
        assert!(admission.admit(peer([10, 9, 9, 9], 1)).is_ok());
    }

    #[test]
    fn an_ipv4_peer_seen_over_ipv6_is_the_same_source() {
        let admission = Admission::new("test", limits(10, 1));
        let v4 = admission.admit(peer([10, 0, 0, 1], 1)).unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:2".parse().unwrap();
        let _mapped = admission.admit(mapped).unwrap();
        assert!(v4.is_evicted(), "the same source: it made way");
        let v6 = admission
            .admit("[2001:db8:1:2::1]:1".parse().unwrap())
            .unwrap();
        let _same64 = admission
            .admit("[2001:db8:1:2:ffff::9]:1".parse().unwrap())
            .unwrap();
        assert!(v6.is_evicted(), "one /64 is one source");
        let other64 = admission
            .admit("[2001:db8:1:3::1]:1".parse().unwrap())
            .unwrap();
        assert!(!other64.is_evicted());
    }

    #[test]
    fn the_log_budget_leaves_lines_out_and_says_how_many() {
        let mut budget = LogBudget::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(budget.take(t0), Some(0));
        assert_eq!(budget.take(t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(budget.take(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(budget.take(t0 + Duration::from_secs(61)), Some(1000));
    }

    #[tokio::test]
    async fn a_peer_that_never_speaks_is_cut_at_its_deadline_and_one_that_authenticates_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admission = Admission::new("test", limits(10, 10));
        let mut incoming = plain_incoming(listener, admission.clone());
        use tokio::io::AsyncReadExt;
        use tokio_stream::StreamExt;

        let started = Instant::now();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut silent_server = incoming.next().await.unwrap().unwrap();
        let _talker = TcpStream::connect(addr).await.unwrap();
        let mut talker_server = incoming.next().await.unwrap().unwrap();
        talker_server.slot().authenticate();

        let err = silent_server.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(250));
        // The authenticated one is still waiting for data after the deadline.
        let waited =
            tokio::time::timeout(Duration::from_millis(600), talker_server.read_u8()).await;
        assert!(waited.is_err(), "an authenticated connection is not cut");
        drop(silent_server);
        assert_eq!(admission.counts(), (1, 0));
    }

    #[tokio::test]
    async fn an_evicted_connection_that_is_being_read_is_closed_at_once() {
        use tokio::io::AsyncReadExt;
        use tokio_stream::StreamExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut limits = limits(10, 1);
        limits.unauthenticated_idle = Duration::from_secs(60);
        let admission = Admission::new("test", limits);
        let mut incoming = plain_incoming(listener, admission);
        let _first = TcpStream::connect(addr).await.unwrap();
        let mut first_server = incoming.next().await.unwrap().unwrap();
        let reading = tokio::spawn(async move { first_server.read_u8().await });
        tokio::task::yield_now().await;
        let _second = TcpStream::connect(addr).await.unwrap();
        let _second_server = incoming.next().await.unwrap().unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .expect("the evicted read ends long before its 60 s deadline")
            .unwrap();
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn only_time_spent_waiting_for_the_peer_counts_toward_its_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_stream::StreamExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admission = Admission::new("test", limits(10, 10));
        let mut incoming = plain_incoming(listener, admission);
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut server = incoming.next().await.unwrap().unwrap();
        // The server is busy elsewhere for twice the 300 ms limit: the peer had spoken.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        // Now it waits for the peer, which says nothing more: cut at the limit.
        let waited = Instant::now();
        let err = server.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(waited.elapsed() >= Duration::from_millis(250));
    }
}
