//! A fault-injecting TCP proxy for the S3 test server: strata talks to the
//! proxy's port, the proxy to s3s-fs, and a test switches the proxy at run
//! time between passing bytes and the faults a real store shows — refused
//! connections, a connection reset in the middle of a response, an endpoint
//! that accepts and then says nothing (a `kill -STOP`ed server), a slow
//! link, and 503 answers.
//!
//! Plain threads over `std::net`: one accept loop, two pumps per
//! connection. The faults act on connections already open too (the S3
//! client keeps a pool), so a switch takes effect at once.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass bytes both ways.
    Pass,
    /// Close every new connection at once with a reset, and reset open
    /// ones when they next carry a request: nothing is listening, to the
    /// client.
    Refuse,
    /// Reset a connection once `after` bytes of responses went through it
    /// (counted from when this mode was set), `times` times in all; then
    /// back to [`Mode::Pass`]. `after` above any metadata answer makes the
    /// reset fall in the middle of an object's body.
    Reset { after: u64, times: u32 },
    /// Reset a connection once `after` bytes of responses went through it,
    /// then [`Mode::Refuse`] from then on: an outage that begins in the
    /// middle of a body and lasts.
    CutOff { after: u64 },
    /// Accept connections and hold them: nothing is forwarded either way,
    /// nothing answered. A frozen endpoint.
    Stall,
    /// Once `after` more request bytes (uploads) went through, switch to
    /// [`Mode::Stall`]: an endpoint that freezes in the middle of a run.
    StallAfter { after: u64 },
    /// Responses trickle at about `bytes_per_sec`.
    Slow { bytes_per_sec: u64 },
    /// Every request is answered `503 Service Unavailable` (no body) and
    /// the connection closed, without reaching the server.
    Unavailable,
}

struct State {
    mode: Mode,
    /// Bumped at every switch: counters restart with the mode.
    generation: u64,
    /// Request bytes seen since the mode was set (for `StallAfter`).
    uploaded: u64,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    resets: AtomicU64,
    connections: AtomicU64,
    unavailable: AtomicU64,
    stopped: AtomicBool,
}

impl Shared {
    fn mode(&self) -> (Mode, u64) {
        let s = self.state.lock().unwrap();
        (s.mode, s.generation)
    }
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`), passing
    /// bytes.
    pub fn start(upstream: &str) -> FaultProxy {
        let addr: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("proxy upstream {upstream}: {e}"));
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: addr,
            state: Mutex::new(State {
                mode: Mode::Pass,
                generation: 0,
                uploaded: 0,
            }),
            resets: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                thread::spawn(move || serve(s, client));
            }
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            shared,
        }
    }

    /// Switches the mode (counters of the new mode start at zero).
    pub fn set(&self, mode: Mode) {
        let mut s = self.shared.state.lock().unwrap();
        s.mode = mode;
        s.generation += 1;
        s.uploaded = 0;
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode().0
    }

    /// Connections reset by [`Mode::Reset`] (and [`Mode::Refuse`]) so far.
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests answered 503 so far.
    pub fn unavailable_answers(&self) -> u64 {
        self.shared.unavailable.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.set(Mode::Refuse);
        // wake the accept loop so it sees `stopped`
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// Closes with a TCP reset (SO_LINGER 0), as a crashed or unplugged peer.
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}

const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Reads one request's head (and drops it), answers 503, closes.
fn answer_unavailable(s: &Shared, mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    s.unavailable.fetch_add(1, Ordering::SeqCst);
    let _ = client.write_all(UNAVAILABLE);
    let _ = client.shutdown(Shutdown::Both);
}

/// Waits while the mode is a stall; false when the proxy stopped.
fn hold_while_stalled(s: &Shared) -> bool {
    loop {
        if s.stopped.load(Ordering::SeqCst) {
            return false;
        }
        if !matches!(s.mode().0, Mode::Stall) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn serve(s: Arc<Shared>, client: TcpStream) {
    match s.mode().0 {
        Mode::Refuse => {
            s.resets.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            return;
        }
        Mode::Unavailable => {
            answer_unavailable(&s, client);
            return;
        }
        // Accepted (the kernel did that) and then nothing.
        Mode::Stall if !hold_while_stalled(&s) => return,
        _ => {}
    }
    let Ok(upstream) = TcpStream::connect(s.upstream) else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let s2 = s.clone();
    let up = thread::spawn(move || requests(&s2, c2, u2));
    responses(&s, upstream, client);
    let _ = up.join();
}

/// Client → server.
fn requests(s: &Shared, mut client: TcpStream, mut upstream: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !hold_while_stalled(s) {
            break;
        }
        match s.mode().0 {
            Mode::Refuse => {
                s.resets.fetch_add(1, Ordering::SeqCst);
                reset(&client);
                reset(&upstream);
                return;
            }
            Mode::Unavailable => {
                // An open connection carrying a new request.
                s.unavailable.fetch_add(1, Ordering::SeqCst);
                let _ = client.write_all(UNAVAILABLE);
                let _ = client.shutdown(Shutdown::Both);
                let _ = upstream.shutdown(Shutdown::Both);
                return;
            }
            Mode::StallAfter { after } => {
                let mut st = s.state.lock().unwrap();
                st.uploaded += n as u64;
                if st.uploaded >= after {
                    st.mode = Mode::Stall;
                    st.generation += 1;
                }
            }
            _ => {}
        }
        if !hold_while_stalled(s) {
            break;
        }
        if upstream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
}

/// Server → client, where resets, stalls and slowness happen.
fn responses(s: &Shared, mut upstream: TcpStream, mut client: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    // Response bytes through this connection under the current mode.
    let mut counted: (u64, u64) = (u64::MAX, 0); // (generation, bytes)
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !hold_while_stalled(s) {
            break;
        }
        let (mode, generation) = s.mode();
        if counted.0 != generation {
            counted = (generation, 0);
        }
        match mode {
            Mode::Reset { after, .. } | Mode::CutOff { after } => {
                let room = after.saturating_sub(counted.1) as usize;
                if room < n {
                    // Pass what fits, then cut the connection mid-response.
                    let _ = client.write_all(&buf[..room]);
                    let mut st = s.state.lock().unwrap();
                    if st.generation == generation {
                        st.mode = match mode {
                            Mode::Reset { after, times } if times > 1 => Mode::Reset {
                                after,
                                times: times - 1,
                            },
                            Mode::CutOff { .. } => Mode::Refuse,
                            _ => Mode::Pass,
                        };
                        st.generation += 1;
                    }
                    drop(st);
                    s.resets.fetch_add(1, Ordering::SeqCst);
                    reset(&client);
                    reset(&upstream);
                    return;
                }
                counted.1 += n as u64;
                if client.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Mode::Slow { bytes_per_sec } => {
                let step = ((bytes_per_sec / 10).max(1) as usize).min(n);
                for piece in buf[..n].chunks(step) {
                    if client.write_all(piece).is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
            _ => {
                counted.1 += n as u64;
                if client.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = client.shutdown(Shutdown::Write);
}
