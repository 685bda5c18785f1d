#!/usr/bin/env python3
"""Handshake-flood tool for edgefleet end-to-end tests (Python 3 stdlib only).

Keeps N TCP connections open to a TLS server without ever completing a TLS
handshake, to exercise the server's defences against such peers:

  idle   connect and send nothing at all
  half   connect and send only the start of a TLS 1.3 ClientHello record
         (a valid 5-byte record header announcing a 512-byte handshake record
         plus a few bytes of it), then nothing more
  mixed  alternate idle / half per connection slot (50/50)

Whenever the server closes a connection (EOF, reset or any socket error) it is
counted as "shed" and a replacement is opened at once.  Connects that fail
(refused, reset, timed out, no local port, ...) are counted as "refused" and
retried after --retry-pause seconds (10 ms) so the tool does not spin.

Every --report-every seconds one JSON line is printed to stdout (flushed):

  {"t": 1.0, "open": 2000, "opened": 2000, "shed": 0, "refused": 0,
   "max_open_age_s": 0.97}

  t               seconds since start
  open            connections currently established (connect completed,
                  not yet closed by the server)
  opened          total connects that succeeded
  shed            total connections closed by the server after they opened
  refused         total connect attempts that failed
  max_open_age_s  age of the oldest currently open connection (0 if none);
                  if the server enforces a handshake deadline this stays
                  below it

On SIGTERM/SIGINT or when --duration has elapsed, every socket is closed and
a final line with the same fields plus "final": true is printed; its counters
(including "open") are taken just before the sockets are closed.  Exit status
is 0 in that case, 2 for bad arguments / unusable --source address.

Data the server might send is never looked at: a readable socket is drained
into a small scratch buffer only to find out whether it reached EOF.
"""

import argparse
import errno
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time

# Linux: let connect() choose the ephemeral port for a bound socket, so the
# (src ip, src port) space is shared across destinations and churn does not
# exhaust it.  Not exported by the socket module on all Python versions.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

IDLE = 0
HALF = 1

# TLS record header: handshake(0x16), legacy_record_version 3.1, length 512,
# followed by the first bytes of the handshake message: ClientHello(0x01),
# 24-bit length 508, legacy_version 3.3, and the first 16 bytes of "random".
HALF_PAYLOAD = (
    bytes([0x16, 0x03, 0x01, 0x02, 0x00])
    + bytes([0x01, 0x00, 0x01, 0xFC])
    + bytes([0x03, 0x03])
    + os.urandom(16)
)

CONNECTING = 0
OPEN = 1


class Conn:
    __slots__ = ("sock", "slot", "state", "started", "opened_at", "pending")

    def __init__(self, sock, slot, started):
        self.sock = sock
        self.slot = slot
        self.state = CONNECTING
        self.started = started
        self.opened_at = 0.0
        self.pending = b""


def parse_target(value):
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % value)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError("bad port in %r" % value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError("port out of range in %r" % value)
    return host, port


def positive_int(value):
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def positive_float(value):
    f = float(value)
    if not f > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return f


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Hold many TCP connections open to a TLS server without "
        "completing a handshake; report open/shed/refused counts as JSON lines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--target", required=True, type=parse_target,
                   metavar="HOST:PORT", help="server address ([v6]:port ok)")
    p.add_argument("--source", default=None, metavar="IP",
                   help="local address to bind every socket to before "
                   "connecting (e.g. 127.0.0.2); unset: let the kernel pick")
    p.add_argument("--connections", type=positive_int, default=100, metavar="N",
                   help="number of connections to keep open at once")
    p.add_argument("--mode", choices=("idle", "half", "mixed"), default="mixed",
                   help="idle: send nothing; half: send a partial ClientHello; "
                   "mixed: alternate")
    p.add_argument("--duration", type=positive_float, default=None, metavar="S",
                   help="stop after this many seconds; unset: run until "
                   "SIGTERM/SIGINT")
    p.add_argument("--report-every", type=positive_float, default=1.0,
                   metavar="S", help="seconds between JSON report lines")
    p.add_argument("--retry-pause", type=float, default=0.01, metavar="S",
                   help="pause before retrying a failed connect")
    p.add_argument("--connect-timeout", type=positive_float, default=5.0,
                   metavar="S", help="a connect still pending after this long "
                   "counts as refused and is retried")
    return p.parse_args(argv)


def raise_nofile_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    candidates = []
    if hard == resource.RLIM_INFINITY:
        # Linux refuses soft=infinity; fs.nr_open bounds it.
        try:
            with open("/proc/sys/fs/nr_open") as f:
                candidates.append(int(f.read().strip()))
        except (OSError, ValueError):
            pass
        candidates += [1048576, 65536]
    else:
        candidates.append(hard)
    for want in candidates:
        if soft != resource.RLIM_INFINITY and want <= soft:
            return soft
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            return want
        except (ValueError, OSError):
            continue
    return soft


class Flood:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.conns = {}  # fd -> Conn (connecting and open)
        self.open_count = 0
        self.opened = 0
        self.shed = 0
        self.refused = 0
        self.stop = False
        self.retry = []  # FIFO of (due_time, slot); constant pause => sorted
        self.retry_head = 0
        self.last_errno_note = {}
        host, port = args.target
        family = socket.AF_UNSPEC
        if args.source:
            family = socket.AF_INET6 if ":" in args.source else socket.AF_INET
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        self.family, _, _, _, self.addr = infos[0]
        self.bind_addr = None
        if args.source:
            self.bind_addr = (args.source, 0) if self.family == socket.AF_INET \
                else (args.source, 0, 0, 0)
        self.mode_of = {
            "idle": lambda slot: IDLE,
            "half": lambda slot: HALF,
            "mixed": lambda slot: slot & 1,
        }[args.mode]

    # -- bookkeeping -------------------------------------------------------

    def note(self, err):
        """Log a connect error class to stderr at most once per 5 s."""
        now = time.monotonic()
        if now - self.last_errno_note.get(err, -10.0) >= 5.0:
            self.last_errno_note[err] = now
            try:
                sys.stderr.write("flood: connect failed: %s\n" % (
                    os.strerror(err) if isinstance(err, int) else err))
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def schedule_retry(self, slot, now):
        self.retry.append((now + self.args.retry_pause, slot))

    def drop(self, conn):
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.conns.pop(conn.sock.fileno(), None)
        try:
            conn.sock.close()
        except OSError:
            pass

    def fail_connect(self, conn, err, now):
        self.refused += 1
        self.note(err)
        self.drop(conn)
        self.schedule_retry(conn.slot, now)

    def lose_open(self, conn, now):
        self.shed += 1
        self.open_count -= 1
        self.drop(conn)
        self.start_connect(conn.slot, now)

    # -- connection lifecycle ----------------------------------------------

    def start_connect(self, slot, now):
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as e:  # EMFILE/ENFILE/ENOBUFS: local pressure
            self.refused += 1
            self.note(e.errno or str(e))
            self.schedule_retry(slot, now)
            return
        conn = Conn(sock, slot, now)
        try:
            sock.setblocking(False)
            if self.bind_addr is not None:
                if self.family == socket.AF_INET:
                    try:
                        sock.setsockopt(socket.IPPROTO_IP,
                                        IP_BIND_ADDRESS_NO_PORT, 1)
                    except OSError:
                        pass
                sock.bind(self.bind_addr)
            err = sock.connect_ex(self.addr)
        except OSError as e:
            self.refused += 1
            self.note(e.errno or str(e))
            try:
                sock.close()
            except OSError:
                pass
            self.schedule_retry(slot, now)
            return
        self.conns[sock.fileno()] = conn
        if err == 0:
            self.sel.register(sock, selectors.EVENT_READ, conn)
            self.established(conn, now)
        elif err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY,
                     errno.EINTR):
            self.sel.register(sock, selectors.EVENT_WRITE, conn)
        else:
            self.refused += 1
            self.note(err)
            self.conns.pop(sock.fileno(), None)
            try:
                sock.close()
            except OSError:
                pass
            self.schedule_retry(slot, now)

    def established(self, conn, now):
        """conn is registered with the selector; switch it to OPEN."""
        conn.state = OPEN
        conn.opened_at = now
        self.opened += 1
        self.open_count += 1
        events = selectors.EVENT_READ
        if self.mode_of(conn.slot) == HALF:
            conn.pending = HALF_PAYLOAD
            if not self.flush(conn, now):
                return
            if conn.pending:
                events |= selectors.EVENT_WRITE
        self.sel.modify(conn.sock, events, conn)

    def flush(self, conn, now):
        """Send what is pending; return False if the connection died."""
        try:
            n = conn.sock.send(conn.pending)
            conn.pending = conn.pending[n:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.lose_open(conn, now)
            return False
        return True

    def on_event(self, conn, mask, now):
        if conn.state == CONNECTING:
            try:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError as e:
                err = e.errno or errno.EIO
            if err:
                self.fail_connect(conn, err, now)
                return
            self.established(conn, now)
            return
        if mask & selectors.EVENT_READ:
            # Only to detect close: drain whatever arrived into scratch space.
            try:
                data = conn.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self.lose_open(conn, now)
                return
            if data == b"":
                self.lose_open(conn, now)
                return
        if mask & selectors.EVENT_WRITE and conn.pending:
            if not self.flush(conn, now):
                return
            if not conn.pending:
                try:
                    self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
                except (KeyError, ValueError, OSError):
                    self.lose_open(conn, now)

    def expire_connects(self, now):
        limit = now - self.args.connect_timeout
        stale = [c for c in self.conns.values()
                 if c.state == CONNECTING and c.started < limit]
        for c in stale:
            self.fail_connect(c, errno.ETIMEDOUT, now)

    # -- reporting / main loop ---------------------------------------------

    def snapshot(self, t, now):
        oldest = None
        for c in self.conns.values():
            if c.state == OPEN and (oldest is None or c.opened_at < oldest):
                oldest = c.opened_at
        return {
            "t": round(t, 3),
            "open": self.open_count,
            "opened": self.opened,
            "shed": self.shed,
            "refused": self.refused,
            "max_open_age_s": round(now - oldest, 3) if oldest is not None
            else 0.0,
        }

    def emit(self, obj):
        try:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError, ValueError):
            # Reader went away: nothing useful left to do.
            self.stop = True

    def run(self):
        args = self.args
        start = time.monotonic()
        deadline = start + args.duration if args.duration else None
        next_report = start + args.report_every
        next_expire = start + 0.5
        for slot in range(args.connections):
            if self.stop:
                break
            self.start_connect(slot, time.monotonic())
        while not self.stop:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            # Due retries (FIFO, all with the same pause => already ordered).
            while self.retry_head < len(self.retry) and \
                    self.retry[self.retry_head][0] <= now and not self.stop:
                slot = self.retry[self.retry_head][1]
                self.retry_head += 1
                self.start_connect(slot, now)
            if self.retry_head > 4096 and self.retry_head * 2 > len(self.retry):
                del self.retry[:self.retry_head]
                self.retry_head = 0
            if now >= next_expire:
                self.expire_connects(now)
                next_expire = now + 0.5
            if now >= next_report:
                self.emit(self.snapshot(now - start, now))
                next_report += args.report_every
                if next_report <= now:
                    next_report = now + args.report_every
            wake = min(next_report, next_expire, now + 0.05)
            if deadline is not None:
                wake = min(wake, deadline)
            if self.retry_head < len(self.retry):
                wake = min(wake, self.retry[self.retry_head][0])
            timeout = max(0.0, wake - time.monotonic())
            try:
                events = self.sel.select(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for key, mask in events:
                conn = key.data
                # A previous handler in this batch may have dropped it.
                if self.conns.get(key.fd) is not conn:
                    continue
                self.on_event(conn, mask, now)
        now = time.monotonic()
        final = self.snapshot(now - start, now)
        final["final"] = True
        self.close_all()
        self.stop = False
        self.emit(final)

    def close_all(self):
        for conn in list(self.conns.values()):
            self.drop(conn)
        self.conns.clear()
        self.open_count = 0
        try:
            self.sel.close()
        except OSError:
            pass


def main(argv=None):
    args = parse_args(argv)
    limit = raise_nofile_limit()
    if limit != resource.RLIM_INFINITY and args.connections + 64 > limit:
        sys.stderr.write("flood: warning: RLIMIT_NOFILE is %d, below %d "
                         "connections + slack\n" % (limit, args.connections))
    try:
        flood = Flood(args)
    except (OSError, socket.gaierror) as e:
        sys.stderr.write("flood: cannot resolve target: %s\n" % e)
        return 2
    if flood.bind_addr is not None:
        try:
            probe = socket.socket(flood.family, socket.SOCK_STREAM)
            try:
                probe.bind(flood.bind_addr)
            finally:
                probe.close()
        except OSError as e:
            sys.stderr.write("flood: cannot bind --source %s: %s\n"
                             % (args.source, e))
            return 2

    def on_signal(signum, frame):
        flood.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    except (AttributeError, ValueError, OSError):
        pass
    flood.run()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
