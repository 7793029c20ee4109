//! The fuser adapter: the only module that knows fuser types. It turns kernel requests into [`MusicFs`]
//! calls and their results into replies. Metadata is answered inline from memory; reads are handed to the
//! async runtime and answered from there, so no FUSE thread ever waits on the runtime (5.1).

use crate::error::FsError;
use crate::fs::{Attr, Kind, MusicFs};
use crate::invalidate::{Invalidation, KernelCache};
use crate::stats::Op;
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, SessionACL,
};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Outstanding background (read-ahead and async read) requests the kernel may send at once.
const MAX_BACKGROUND: u16 = 1024;

/// How long the kernel may cache names and attributes. After a sync the daemon tells the kernel what changed
/// ([`KernelNotifier`]), so this bounds staleness only when that fails (see [`crate::invalidate`]).
const TTL: Duration = Duration::from_secs(10);

pub struct FuseAdapter {
    fs: Arc<MusicFs>,
    runtime: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
}

fn errno(err: &FsError) -> Errno {
    Errno::from_i32(err.errno())
}

/// Runs a request handler so that a panic inside it cannot take the FUSE thread (and the mount) down (2.2):
/// the panic is logged by the panic hook, the reply it owned is dropped, and fuser answers that request EIO.
fn contained(op: &'static str, handler: impl FnOnce()) {
    let guarded = move || {
        inject_panic(op);
        handler();
    };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(guarded)).is_err() {
        tracing::error!(op, "2.2 a FUSE request handler panicked; answered EIO, the mount keeps serving");
    }
}

/// Failpoint `fuse::request::panic`: configured as `return(OP)`, makes every request of kind OP (`read`,
/// `lookup`, `getattr`, …) panic inside its handler, to prove panics are contained (2.2).
fn inject_panic(op: &str) {
    #[cfg(feature = "failpoints")]
    if fail::eval("fuse::request::panic", |arg| arg).flatten().is_some_and(|target| target == op) {
        panic!("failpoint fuse::request::panic in {op}");
    }
    let _ = op;
}

impl FuseAdapter {
    pub fn new(fs: Arc<MusicFs>, runtime: tokio::runtime::Handle) -> Self {
        let uid = nix_uid();
        FuseAdapter { fs, runtime, uid: uid.0, gid: uid.1 }
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind: match a.kind {
                Kind::Dir => FileType::Directory,
                Kind::File => FileType::RegularFile,
            },
            perm: a.perm,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 128 * 1024,
            flags: 0,
        }
    }
}

fn nix_uid() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail and have no preconditions.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Mount options for a read-only music library.
pub fn mount_config(threads: usize, allow_other: bool) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("musicfs".into()),
        MountOption::Subtype("musicfs".into()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    config.acl = if allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(threads.max(1));
    // Every thread reads the one descriptor: the kernel ends the requests read on a cloned descriptor when
    // it closes, so with clones a restart that keeps the connection (2.11) would still fail reads.
    config.clone_fd = false;
    config
}

/// Passes invalidations on to the kernel through the session's notifier.
pub struct KernelNotifier(fuser::Notifier);

impl KernelCache for KernelNotifier {
    fn invalidate(&self, what: &Invalidation) -> std::io::Result<()> {
        match what {
            Invalidation::Entry { parent, name } => self.0.inval_entry(INodeNo(*parent), OsStr::from_bytes(name)),
            // Offset 0, length 0: attributes and every cached page.
            Invalidation::Inode(ino) => self.0.inval_inode(INodeNo(*ino), 0, 0),
        }
    }
}

/// The kernel cache of a mounted session, for the daemon's invalidator.
pub fn kernel_cache(session: &fuser::Session<FuseAdapter>) -> Arc<dyn KernelCache> {
    Arc::new(KernelNotifier(session.notifier()))
}

/// Mounts and returns the session; the caller runs it on a thread of its own.
pub fn mount(
    adapter: FuseAdapter,
    mount_point: &Path,
    threads: usize,
    allow_other: bool,
) -> std::io::Result<fuser::Session<FuseAdapter>> {
    fuser::Session::new(adapter, mount_point, &mount_config(threads, allow_other))
}

/// Serves a connection that an earlier daemon mounted and initialized (2.11), from its `/dev/fuse`
/// descriptor: no mount, no INIT; the parameters negotiated then stay in force.
pub fn resume(adapter: FuseAdapter, fd: OwnedFd, threads: usize, allow_other: bool) -> fuser::Session<FuseAdapter> {
    let config = mount_config(threads, allow_other);
    fuser::Session::resume(adapter, fd, config.acl, config)
}

/// Serves a connection a privileged helper mounted (issue 16): no mount here; answers the INIT the kernel
/// queued when the helper mounted, then returns the session.
pub fn serve_mounted(
    adapter: FuseAdapter,
    fd: OwnedFd,
    threads: usize,
    allow_other: bool,
) -> std::io::Result<fuser::Session<FuseAdapter>> {
    let config = mount_config(threads, allow_other);
    fuser::Session::from_fd(adapter, fd, config.acl, config)
}

/// A copy of the session's `/dev/fuse` descriptor, for the service manager's store (2.11).
pub fn connection(session: &fuser::Session<FuseAdapter>) -> std::io::Result<OwnedFd> {
    session.as_fd().try_clone_to_owned()
}

/// Asks the kernel to queue again every request read from this connection and not answered (by a daemon
/// that died): FUSE_NOTIFY_RESEND, Linux 6.9.
pub fn resend_unanswered(session: &fuser::Session<FuseAdapter>) -> std::io::Result<()> {
    session.notifier().resend()
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Larger reads and readahead mean fewer round trips for sequential playback and copies.
        for size in [1 << 20, 512 << 10, 256 << 10] {
            if config.set_max_readahead(size).is_ok() {
                break;
            }
        }
        let _ = config.set_max_write(1 << 20);
        // Reads are answered on the async runtime, never on the FUSE thread, so many can be in flight. The
        // kernel's default of 12 outstanding background requests would queue readers behind a hung origin,
        // each waiting its turn for a full read timeout (5.1); let the kernel send far more at once.
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        // The origin file may change under the same inode: let a changed mtime drop stale cached pages.
        let _ = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        contained("lookup", move || {
            let result = self.fs.lookup(parent.0, name.as_bytes());
            self.fs.stats.record(Op::Lookup, result.is_ok());
            match result {
                Ok(attr) => reply.entry(&TTL, &self.file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        contained("getattr", move || {
            let result = self.fs.getattr(ino.0);
            self.fs.stats.record(Op::Getattr, result.is_ok());
            match result {
                Ok(attr) => reply.attr(&TTL, &self.file_attr(&attr)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        contained("open", move || {
            let wants_write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY) || flags.0 & libc::O_TRUNC != 0;
            let result = self.fs.open(ino.0, wants_write);
            self.fs.stats.record(Op::Open, result.is_ok());
            match result {
                // Content is immutable for a given fingerprint: let the kernel keep its page cache across opens.
                Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        // The reply travels with the task; if the task panics, fuser answers EIO when the reply is dropped.
        let started = std::time::Instant::now();
        self.runtime.spawn(async move {
            inject_panic("read");
            let result = fs.read(ino.0, offset, size).await;
            fs.stats.record_read(started.elapsed(), result.is_ok());
            match result {
                Ok(pieces) => reply.data_vectored(&pieces.slices().collect::<Vec<_>>()),
                Err(e) => {
                    tracing::debug!(ino = ino.0, offset, size, error = %e, "read failed");
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Nothing is ever written, so there is nothing to flush at close.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        contained("opendir", move || match self.fs.getattr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::from_i32(libc::ENOTDIR)),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        contained("readdir", move || {
            let result = self.fs.readdir(ino.0, offset);
            self.fs.stats.record(Op::Readdir, result.is_ok());
            match result {
                Ok(entries) => {
                    for e in entries {
                        let kind = if e.kind == Kind::Dir { FileType::Directory } else { FileType::RegularFile };
                        if reply.add(INodeNo(e.ino), e.next_offset, kind, &e.name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let stats = self.fs.stats();
        reply.statfs(0, 0, 0, stats.files, 0, 4096, 255, 4096);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(errno(&FsError::ReadOnly));
    }

    fn mkdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        reply.error(errno(&FsError::ReadOnly));
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(&FsError::ReadOnly));
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(&FsError::ReadOnly));
    }

    /// Answered without a log line: Python's `open`, tag editors and players probe every file they open with
    /// an ioctl (TCGETS: is it a terminal?), and fuser's default logged a warning for each.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(errno(&FsError::NoIoctl));
    }
}
