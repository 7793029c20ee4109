//! `FdStore`: what systemd does for a `Type=notify` service with `FileDescriptorStoreMax=`, for process
//! tests of 2.11 — a notify socket that records every message and keeps the descriptors sent with
//! `FDSTORE=1` under their `FDNAME=`, dropping them on `FDSTOREREMOVE=1`, so that a test can kill the daemon
//! and pass the stored descriptors to the next one in `LISTEN_FDS` (see [`crate::daemon::DaemonArgs`]).

use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Held {
    messages: Vec<String>,
    fds: Vec<(String, Arc<OwnedFd>)>,
}

pub struct FdStore {
    path: PathBuf,
    held: Arc<Mutex<Held>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FdStore {
    /// Binds the notify socket at `dir/notify.sock` and starts receiving.
    pub fn new(dir: &Path) -> Result<FdStore> {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let held = Arc::new(Mutex::new(Held::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (held.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some((text, fds)) = receive(&socket) {
                    keep(&mut h.lock().unwrap_or_else(|e| e.into_inner()), text, fds);
                }
            }
        });
        Ok(FdStore { path, held, stop, thread: Some(thread) })
    }

    /// The environment a daemon needs to talk to this store.
    pub fn env(&self) -> (String, String) {
        ("NOTIFY_SOCKET".into(), self.path.display().to_string())
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<String> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).messages.clone()
    }

    /// The descriptors held now, with their names.
    pub fn stored(&self) -> Vec<(String, Arc<OwnedFd>)> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).fds.clone()
    }

    /// Waits until a descriptor named `name` is held.
    pub fn wait_for_fd(&self, name: &str, limit: Duration) -> Result<Arc<OwnedFd>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((_, fd)) = self.stored().into_iter().find(|(n, _)| n == name) {
                return Ok(fd);
            }
            anyhow::ensure!(Instant::now() < deadline, "no descriptor named {name} stored: {:?}", self.messages());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FdStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn keep(held: &mut Held, text: String, fds: Vec<OwnedFd>) {
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key).map(str::to_owned));
    let name = field("FDNAME=").unwrap_or_else(|| "stored".into());
    if field("FDSTOREREMOVE=").as_deref() == Some("1") {
        held.fds.retain(|(n, _)| *n != name);
    }
    if field("FDSTORE=").as_deref() == Some("1") {
        held.fds.extend(fds.into_iter().map(|fd| (name.clone(), Arc::new(fd))));
    }
    held.messages.push(text);
}

/// One datagram with the descriptors it carries (SCM_RIGHTS), or None on timeout.
fn receive(socket: &UnixDatagram) -> Option<(String, Vec<OwnedFd>)> {
    let mut data = [0u8; 4096];
    let mut control = [0u64; 64];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg into buffers that outlive the call; MSG_CMSG_CLOEXEC marks received fds close-on-exec.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return None;
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages recvmsg filled in, with the libc macros made for it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let first = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..payload / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(first.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Some((String::from_utf8_lossy(&data[..n as usize]).into_owned(), fds))
}
