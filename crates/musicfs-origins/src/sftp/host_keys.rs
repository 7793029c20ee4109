//! Host keys: OpenSSH known_hosts matching, `SHA256:` fingerprints, and which host key algorithms to ask
//! the server for. There is no "accept anything": an unknown, changed or revoked key is refused.

/// The OpenSSH fingerprint of a host key blob: `SHA256:` and the unpadded base64 of its SHA-256 digest.
pub fn sha256_fingerprint(key_blob: &[u8]) -> String {
    let digest = openssl::sha::sha256(key_blob);
    format!("SHA256:{}", openssl::base64::encode_block(&digest).trim_end_matches('='))
}

/// Host key algorithms to offer: those for the key types known for this host first, then the rest.
pub(super) fn host_key_preferences(known_types: &[String], supported: &[&str]) -> String {
    let mut prefs: Vec<&str> = Vec::new();
    for t in known_types {
        let algs: &[&str] = match t.as_str() {
            "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            other => &[other][..],
        };
        for alg in algs {
            if let Some(found) = supported.iter().find(|s| *s == alg)
                && !prefs.contains(found)
            {
                prefs.push(found);
            }
        }
    }
    for alg in supported {
        if !prefs.contains(alg) {
            prefs.push(alg);
        }
    }
    prefs.join(",")
}

/// Ciphers to offer, best first: with hardware AES (AES-NI), AES-GCM and then AES-CTR before everything
/// else, since libssh2's chacha20-poly1305 is portable C that took 43 % of the daemon's time in a cold SFTP
/// read; without it, the order libssh2 supports them in. Only ciphers in `supported` are named.
pub(super) fn cipher_preferences(supported: &[&str], hardware_aes: bool) -> String {
    const FAST_WITH_AES_NI: [&str; 4] =
        ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr"];
    let mut prefs: Vec<&str> = Vec::new();
    if hardware_aes {
        prefs.extend(FAST_WITH_AES_NI.iter().filter(|alg| supported.contains(alg)));
    }
    prefs.extend(supported.iter().filter(|alg| !prefs.contains(alg)).collect::<Vec<_>>());
    prefs.join(",")
}

/// Whether this CPU encrypts AES in hardware.
pub(super) fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// OpenSSH known_hosts files: which lines name a host, and whether they vouch for a key.
pub mod known_hosts {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;

    /// What a known_hosts file says about a host's key.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Verdict {
        /// A line for the host lists this key.
        Trusted,
        /// No line for the host has a key of this type.
        Unknown,
        /// A line for the host has a different key of the same type (1-based line number).
        Changed { line: usize },
        /// The key is marked `@revoked`.
        Revoked { line: usize },
    }

    /// The name OpenSSH looks a host up by: `host` on port 22, `[host]:port` elsewhere.
    pub fn lookup_name(host: &str, port: u16) -> String {
        if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") }
    }

    struct Line<'a> {
        number: usize,
        marker: Option<&'a str>,
        hosts: &'a str,
        key_type: &'a str,
        key: Vec<u8>,
    }

    fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
        text.lines().enumerate().filter_map(|(i, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.split_whitespace();
            let first = fields.next()?;
            let (marker, hosts) = if first.starts_with('@') { (Some(first), fields.next()?) } else { (None, first) };
            let key_type = fields.next()?;
            let key = openssl::base64::decode_block(fields.next()?).ok()?;
            Some(Line { number: i + 1, marker, hosts, key_type, key })
        })
    }

    /// The key type named inside a key blob (its first SSH string).
    pub fn blob_key_type(blob: &[u8]) -> Option<&str> {
        let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        std::str::from_utf8(blob.get(4..4 + len)?).ok()
    }

    /// Checks `key` (the server's host key blob) for `host`:`port` against the file's text.
    pub fn check(text: &str, host: &str, port: u16, key: &[u8]) -> Verdict {
        let name = lookup_name(host, port);
        let key_type = blob_key_type(key).unwrap_or_default();
        let mut trusted = false;
        let mut changed = None;
        for line in lines(text) {
            if !hosts_match(line.hosts, &name) {
                continue;
            }
            match line.marker {
                Some("@revoked") if line.key == key => return Verdict::Revoked { line: line.number },
                Some(_) => {}
                None if line.key == key => trusted = true,
                None if line.key_type == key_type => {
                    changed.get_or_insert(line.number);
                }
                None => {}
            }
        }
        match (trusted, changed) {
            (true, _) => Verdict::Trusted,
            (false, Some(line)) => Verdict::Changed { line },
            (false, None) => Verdict::Unknown,
        }
    }

    /// The key types the file lists for `host`:`port`, in file order.
    pub fn key_types_for(text: &str, host: &str, port: u16) -> Vec<String> {
        let name = lookup_name(host, port);
        let mut out: Vec<String> = Vec::new();
        for line in lines(text) {
            if line.marker.is_none() && hosts_match(line.hosts, &name) && !out.iter().any(|t| t == line.key_type) {
                out.push(line.key_type.to_owned());
            }
        }
        out
    }

    /// Whether a host field (`a,b,!c`, wildcards, or one hashed `|1|salt|hash`) names `name`.
    pub fn hosts_match(field: &str, name: &str) -> bool {
        if let Some(hashed) = field.strip_prefix("|1|") {
            return hashed_matches(hashed, name);
        }
        let name = name.to_ascii_lowercase();
        let mut matched = false;
        for pattern in field.split(',') {
            let (negated, pattern) = match pattern.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, pattern),
            };
            if glob(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
                if negated {
                    return false;
                }
                matched = true;
            }
        }
        matched
    }

    fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
        let Some((salt, hash)) = salt_and_hash.split_once('|') else { return false };
        let (Ok(salt), Ok(hash)) = (openssl::base64::decode_block(salt), openssl::base64::decode_block(hash)) else {
            return false;
        };
        let mac = PKey::hmac(&salt).and_then(|key| {
            let mut signer = Signer::new(MessageDigest::sha1(), &key)?;
            signer.update(name.as_bytes())?;
            signer.sign_to_vec()
        });
        mac.is_ok_and(|mac| mac == hash)
    }

    /// `*` and `?` wildcards, as in OpenSSH's match_pattern.
    fn glob(pattern: &[u8], text: &[u8]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..])),
            (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
            (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B64: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const OTHER_B64: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBvXx0tOk6zF4eX7UoQwYqTjGb3V7R6bVZ3r+0U1gq9z";

    #[test]
    fn hardware_aes_puts_aes_gcm_and_ctr_first_and_names_only_supported_ciphers() {
        let supported = ["chacha20-poly1305@openssh.com", "aes256-ctr", "aes128-gcm@openssh.com", "aes128-ctr"];
        assert_eq!(
            cipher_preferences(&supported, true),
            "aes128-gcm@openssh.com,aes128-ctr,aes256-ctr,chacha20-poly1305@openssh.com"
        );
        assert_eq!(cipher_preferences(&supported, false), supported.join(","));
    }

    fn blob(b64: &str) -> Vec<u8> {
        openssl::base64::decode_block(b64).unwrap()
    }

    #[test]
    fn known_hosts_lines_match_plain_wildcard_negated_and_hashed_hosts() {
        use known_hosts::{Verdict, check, hosts_match, lookup_name};
        assert_eq!(lookup_name("nas", 22), "nas");
        assert_eq!(lookup_name("nas", 2222), "[nas]:2222");
        assert!(hosts_match("nas,10.0.0.5", "nas"));
        assert!(hosts_match("NAS.example.com", "nas.example.com"));
        assert!(hosts_match("127.0.0.1,[127.0.0.1]:*", "[127.0.0.1]:40123"));
        assert!(hosts_match("*.example.com,!bad.example.com", "nas.example.com"));
        assert!(!hosts_match("*.example.com,!bad.example.com", "bad.example.com"));
        assert!(hosts_match("nas?", "nas1") && !hosts_match("nas?", "nas"));
        // The port matters: a plain name is port 22 only.
        assert!(!hosts_match("nas", "[nas]:2222"));
        // `ssh-keygen -H` of "nas": HMAC-SHA1 of the name under the salt.
        let salt = [7u8; 20];
        let key = openssl::pkey::PKey::hmac(&salt).unwrap();
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &key).unwrap();
        signer.update(b"nas").unwrap();
        let hashed = format!(
            "|1|{}|{}",
            openssl::base64::encode_block(&salt),
            openssl::base64::encode_block(&signer.sign_to_vec().unwrap())
        );
        assert!(hosts_match(&hashed, "nas") && !hosts_match(&hashed, "other"));

        let key = blob(KEY_B64);
        let file = format!("# comment\n\n{hashed} ssh-ed25519 {KEY_B64}\n[127.0.0.1]:* ssh-ed25519 {OTHER_B64} x\n");
        assert_eq!(check(&file, "nas", 22, &key), Verdict::Trusted);
        assert_eq!(check(&file, "nas", 2222, &key), Verdict::Unknown, "another port is another host");
        assert_eq!(check(&file, "elsewhere", 22, &key), Verdict::Unknown);
        assert_eq!(check(&file, "127.0.0.1", 4000, &key), Verdict::Changed { line: 4 });
        let revoked = format!("{file}@revoked * ssh-ed25519 {KEY_B64}\n");
        assert_eq!(check(&revoked, "nas", 22, &key), Verdict::Revoked { line: 5 });
        // A different key type for the host is not a change (the server may have several).
        let rsa_only = "nas ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7\n";
        assert_eq!(check(rsa_only, "nas", 22, &key), Verdict::Unknown);
        assert_eq!(known_hosts::key_types_for(&file, "nas", 22), ["ssh-ed25519"]);
        assert_eq!(known_hosts::blob_key_type(&key), Some("ssh-ed25519"));
    }

    #[test]
    fn fingerprints_read_like_openssh_and_known_key_types_go_first() {
        // `ssh-keygen -lf` prints SHA256: and the unpadded base64 of the blob's digest.
        let fp = sha256_fingerprint(&blob(KEY_B64));
        assert!(musicfs_core::config::is_sha256_fingerprint(&fp), "{fp}");
        assert_ne!(fp, sha256_fingerprint(&blob(OTHER_B64)));
        let supported = ["ecdsa-sha2-nistp256", "ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];
        assert_eq!(
            host_key_preferences(&["ssh-rsa".into()], &supported),
            "rsa-sha2-512,rsa-sha2-256,ssh-rsa,ecdsa-sha2-nistp256,ssh-ed25519"
        );
        assert_eq!(
            host_key_preferences(&["ssh-ed25519".into()], &supported),
            "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa"
        );
    }
}
