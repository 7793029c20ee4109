//! The network origins of the system layer's machine, each a systemd unit beside `musicfs.service`: an S3
//! server (`s3s-fs`: MinIO is not packaged for Debian; the NixOS test is where MinIO runs), OpenSSH serving
//! SFTP (Debian's `ssh.service`), and a Toxiproxy API (`toxiproxy-lite`, started with its proxies from
//! `/etc/toxiproxy.json`) in front of both, so the probe can add latency, cut connections and partition the
//! network (N1–N4, 4.2.3, 4.2.6). The S3 endpoint is a host name from `/etc/hosts` (4.2.5: the probe
//! removes it). The S3 secret reaches the servers and the daemon only through `/etc/musicfs/secrets.env`
//! (mode 0600), never through the world-readable config. The container has a private network: these fixed
//! ports are its own.

use anyhow::{Context, Result, ensure};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Where the S3 server keeps bucket `music`: `<S3_DATA>/music/<key>`. The daemon's backup of the S3 origin
/// reads the same files as a local directory (4.2.6), and the probe checks S3 reads against them.
pub const S3_DATA: &str = "/srv/s3";
/// The directory the SFTP origin serves.
pub const SFTP_DATA: &str = "/srv/sftp/music";
/// The S3 endpoint's host name, resolved through `/etc/hosts`.
pub const S3_HOST: &str = "s3.musicfs.test";

/// Files per remote origin, and their size: small enough to stay quick, large enough to stream.
const REMOTE_FILES: u64 = 3;
const REMOTE_FILE_BYTES: usize = 2 << 20;

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn enable(root: &Path, unit: &str) -> Result<()> {
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    let link = wants.join(unit);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link)?;
    Ok(())
}

/// The `[[origins]]` of the daemon's config that reach these servers, through the proxies.
pub fn origins_toml() -> String {
    format!(
        "\n[[origins]]\nid = \"bucket\"\ntype = \"s3\"\npriority = 1\nendpoint = \"http://{S3_HOST}:19000\"\n\
         bucket = \"music\"\naccess_key = \"musicfs\"\nsecret_key_env = \"MUSICFS_S3_SECRET\"\n\n\
         [[origins]]\nid = \"bucket-copy\"\ntype = \"local\"\npath = \"{S3_DATA}/music\"\nbackup_for = \"bucket\"\n\n\
         [[origins]]\nid = \"nas\"\ntype = \"sftp\"\npriority = 2\nhost = \"127.0.0.1\"\nport = 2222\n\
         user = \"music\"\nprivate_key_file = \"/etc/musicfs/id_ed25519\"\n\
         known_hosts_file = \"/etc/musicfs/known_hosts\"\npath = \"{SFTP_DATA}\"\n"
    )
}

/// Installs the servers, their units, keys, secrets and data into the machine's root; `bins` holds the
/// freshly built `toxiproxy-lite`.
pub fn install(root: &Path, bins: &Path) -> Result<()> {
    let s3s = which("s3s-fs").context(
        "s3s-fs not found: cargo install s3s-fs --version 0.14.1 --locked --features binary (or run .ci/run)",
    )?;
    std::fs::copy(&s3s, root.join("usr/local/bin/s3s-fs")).context("installing s3s-fs")?;
    std::fs::copy(bins.join("toxiproxy-lite"), root.join("usr/local/bin/toxiproxy-lite"))
        .context("installing toxiproxy-lite")?;

    // One secret per run, readable by root only.
    let secret = blake3::hash(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes()).to_hex()
        [..32]
        .to_owned();
    write(&root.join("etc/musicfs/secrets.env"), &format!("MUSICFS_S3_SECRET={secret}\n"), 0o600)?;
    write(
        &root.join("etc/systemd/system/musicfs-s3.service"),
        &format!(
            "[Unit]\nDescription=S3 server for the system test (s3s-fs)\n\n[Service]\n\
             EnvironmentFile=/etc/musicfs/secrets.env\n\
             ExecStart=/usr/local/bin/s3s-fs --host 127.0.0.1 --port 9000 --access-key musicfs --secret-key ${{MUSICFS_S3_SECRET}} {S3_DATA}\n\
             Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n"
        ),
        0o644,
    )?;
    enable(root, "musicfs-s3.service")?;
    write(
        &root.join("etc/toxiproxy.json"),
        r#"[
  {"name": "s3", "listen": "127.0.0.1:19000", "upstream": "127.0.0.1:9000", "enabled": true},
  {"name": "sftp", "listen": "127.0.0.1:2222", "upstream": "127.0.0.1:22", "enabled": true}
]
"#,
        0o644,
    )?;
    write(
        &root.join("etc/systemd/system/toxiproxy.service"),
        "[Unit]\nDescription=Toxiproxy API for the system test (toxiproxy-lite)\n\n[Service]\n\
         ExecStart=/usr/local/bin/toxiproxy-lite --host 127.0.0.1 --port 8474 --config /etc/toxiproxy.json\n\
         Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    )?;
    enable(root, "toxiproxy.service")?;
    let hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap_or_default();
    if !hosts.contains(S3_HOST) {
        write(&root.join("etc/hosts"), &format!("{hosts}127.0.0.1 {S3_HOST}\n"), 0o644)?;
    }

    // SFTP: a login with a key and nothing else; the daemon knows the server's host key beforehand.
    write(
        &root.join("etc/ssh/sshd_config.d/musicfs-system-test.conf"),
        "ListenAddress 127.0.0.1\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
        0o644,
    )?;
    enable(root, "ssh.service")?;
    if !std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default().contains("\nmusic:") {
        run(Command::new("chroot").arg(root).args(["useradd", "--create-home", "--shell", "/bin/sh", "music"]))?;
    }
    let key = root.join("etc/musicfs/id_ed25519");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "musicfs-system-test", "-f"])
        .arg(&key))?;
    // The daemon reads it as its own user (dist/musicfs.sysusers, created before the servers).
    run(Command::new("chroot").arg(root).args(["chown", "musicfs:musicfs", "/etc/musicfs/id_ed25519"]))?;
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    write(&root.join("home/music/.ssh/authorized_keys"), &public, 0o600)?;
    run(Command::new("chroot").arg(root).args(["chown", "-R", "music:music", "/home/music/.ssh"]))?;
    let host_key = std::fs::read_to_string(root.join("etc/ssh/ssh_host_ed25519_key.pub"))
        .context("the rootfs has no SSH host key (is openssh-server installed?)")?;
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    ensure!(host_key.len() == 2, "unreadable SSH host key");
    write(&root.join("etc/musicfs/known_hosts"), &format!("[127.0.0.1]:2222 {}\n", host_key.join(" ")), 0o644)?;

    // The remote libraries: pseudo-random audio-sized files, distinct per origin.
    for (dir, name, seed) in [(format!("{S3_DATA}/music"), "s3", 200), (SFTP_DATA.to_owned(), "sftp", 300)] {
        let dir = root.join(dir.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)?;
        for i in 0..REMOTE_FILES {
            let data = musicfs_test_utils::files::pseudo_random_bytes(REMOTE_FILE_BYTES, seed + i);
            std::fs::write(dir.join(format!("{name}-{i}.wav")), data)?;
        }
    }
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
