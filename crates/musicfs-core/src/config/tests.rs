//! Tests of the config file: parsing, defaults, and one clear error line per mistake.

use super::*;

const GOOD: &str = r#"
mount_point = "/mnt/music"
cache_dir = "/var/cache/musicfs"

[[origins]]
id = "nas"
type = "local"
priority = 1
path = "/srv/music"

[cache]
max_size = "2GiB"
chunk_avg = "512KiB"

[fuse]
read_timeout = "10s"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/musicfs.toml"))
}

#[test]
fn a_full_config_parses_with_defaults_filled_in() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.origins[0].id, "nas");
    assert_eq!(config.origins[0].spec, OriginSpec::Local { path: "/srv/music".into() });
    assert_eq!(config.cache.max_size, ByteSize(2 << 30));
    assert_eq!(config.cache.chunk_avg, ByteSize(512 << 10));
    assert_eq!(config.cache.chunk_min(), ByteSize(384 << 10), "three quarters of the average, unless set");
    assert_eq!(CacheConfig::default().chunk_min(), ByteSize(768 << 10));
    assert_eq!(config.read_timeout(), Duration::from_secs(10));
    assert_eq!(config.logging.level, "info");
}

#[test]
fn an_unknown_key_is_an_error_naming_key_file_and_line() {
    let text = GOOD.replace("max_size", "max_sise");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("/etc/musicfs.toml:12:"), "{err}");
    assert!(err.contains("max_sise"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_missing_key_is_an_error_naming_it() {
    let text = GOOD.replace("cache_dir = \"/var/cache/musicfs\"", "");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("cache_dir"), "{err}");
    assert!(err.starts_with("config error: /etc/musicfs.toml"), "{err}");
}

#[test]
fn a_bad_value_names_the_key() {
    let err = parse(&GOOD.replace("\"2GiB\"", "\"2 parsecs\"")).unwrap_err().to_string();
    assert!(err.contains("parsecs"), "{err}");
    let err = parse(&GOOD.replace("type = \"local\"", "type = \"ftp\"")).unwrap_err().to_string();
    assert!(err.contains("ftp"), "{err}");
    let err = parse(&GOOD.replace("chunk_avg = \"512KiB\"", "chunk_avg = \"64MiB\"")).unwrap_err().to_string();
    assert!(err.contains("chunk_avg"), "{err}");
    let err = parse(&GOOD.replace("/srv/music", "srv/music")).unwrap_err().to_string();
    assert!(err.contains("origins.path"), "{err}");
}

/// Proves L1: 3.3
#[test]
fn the_event_queue_capacity_is_configurable_and_checked() {
    assert_eq!(parse(GOOD).unwrap().events.capacity, 1024);
    let config = parse(&format!("{GOOD}\n[events]\ncapacity = 16\n")).unwrap();
    assert_eq!(config.events.capacity, 16);
    let err = parse(&format!("{GOOD}\n[events]\ncapacity = 0\n")).unwrap_err().to_string();
    assert!(err.contains("events.capacity"), "{err}");
}

#[test]
fn the_listing_bound_defaults_to_five_minutes_and_is_checked() {
    assert_eq!(parse(GOOD).unwrap().library.list_timeout.0, Duration::from_secs(300));
    let config = parse(&format!("{GOOD}\n[library]\nlist_timeout = \"90s\"\n")).unwrap();
    assert_eq!(config.library.list_timeout.0, Duration::from_secs(90));
    let err = parse(&format!("{GOOD}\n[library]\nlist_timeout = \"0s\"\n")).unwrap_err().to_string();
    assert!(err.contains("library.list_timeout"), "{err}");
}

/// Proves L1: 4.2.6
#[test]
fn a_backup_origin_must_name_one_library_origin() {
    let backup = |of: &str| {
        format!("{GOOD}\n[[origins]]\nid = \"mirror\"\ntype = \"local\"\npath = \"/m\"\nbackup_for = \"{of}\"\n")
    };
    let config = parse(&backup("nas")).unwrap();
    assert_eq!(config.origins.iter().find(|o| o.id == "mirror").unwrap().backup_for.as_deref(), Some("nas"));
    for (of, why) in [("nowhere", "not configured"), ("mirror", "itself")] {
        let err = parse(&backup(of)).unwrap_err().to_string();
        assert!(err.contains("origins.backup_for") && err.contains(why), "{err}");
    }
    let two = format!(
        "{}[[origins]]\nid = \"mirror2\"\ntype = \"local\"\npath = \"/m2\"\nbackup_for = \"nas\"\n",
        backup("nas")
    );
    assert!(parse(&two).unwrap_err().to_string().contains("more than one backup"));
    let chained = format!(
        "{}[[origins]]\nid = \"mirror2\"\ntype = \"local\"\npath = \"/m2\"\nbackup_for = \"mirror\"\n",
        backup("nas")
    );
    assert!(parse(&chained).unwrap_err().to_string().contains("itself a backup"));
}

#[test]
fn a_config_without_origins_is_rejected() {
    let err = parse("mount_point = \"/m\"\ncache_dir = \"/c\"\norigins = []\n").unwrap_err().to_string();
    assert!(err.contains("origins"), "{err}");
}

const S3: &str = r#"
mount_point = "/mnt/music"
cache_dir = "/var/cache/musicfs"

[[origins]]
id = "bucket"
type = "s3"
endpoint = "https://s3.example.com"
bucket = "music"
prefix = "library/flac"
access_key = "AKIAEXAMPLE"
secret_key_file = "/etc/musicfs/s3-secret"
"#;

#[test]
fn an_s3_origin_parses_with_its_fields_and_default_region() {
    let config = parse(S3).unwrap();
    let o = &config.origins[0];
    assert_eq!(o.spec.kind(), OriginKind::S3);
    assert_eq!(
        o.spec,
        OriginSpec::S3 {
            endpoint: "https://s3.example.com".into(),
            bucket: "music".into(),
            prefix: Some("library/flac".into()),
            region: DEFAULT_S3_REGION.into(),
            access_key: "AKIAEXAMPLE".into(),
            secret: SecretSource::File("/etc/musicfs/s3-secret".into()),
            reads_in_flight: DEFAULT_S3_READS_IN_FLIGHT,
        }
    );
    // A local origin and an s3 one side by side.
    let both = format!("{GOOD}\n{}", &S3[S3.find("[[origins]]").unwrap()..]);
    let both =
        both.replace("[cache]\nmax_size = \"2GiB\"\nchunk_avg = \"512KiB\"\n\n[fuse]\nread_timeout = \"10s\"\n", "");
    assert_eq!(parse(&both).unwrap().origins.len(), 2);
}

#[test]
fn s3_origins_need_their_own_fields_and_refuse_the_local_ones() {
    let cases: [(&str, &str, &str); 13] = [
        ("endpoint = \"https://s3.example.com\"\n", "", "origins.endpoint: required"),
        ("https://s3.example.com", "ftp://x", "origins.endpoint"),
        ("https://s3.example.com", "https://", "origins.endpoint"),
        ("bucket = \"music\"\n", "", "origins.bucket: required"),
        ("bucket = \"music\"", "bucket = \"a/b\"", "origins.bucket"),
        ("prefix = \"library/flac\"", "prefix = \"library/../etc\"", "origins.prefix"),
        ("prefix = \"library/flac\"", "prefix = \"a//b\"", "origins.prefix"),
        ("access_key = \"AKIAEXAMPLE\"\n", "", "origins.access_key: required"),
        ("secret_key_file = \"/etc/musicfs/s3-secret\"\n", "", "needs one of secret_key_file"),
        ("/etc/musicfs/s3-secret", "s3-secret", "origins.secret_key_file"),
        ("type = \"s3\"", "type = \"s3\"\npath = \"/srv/music\"", "origins.path: only for `type = \"local\"`"),
        ("type = \"s3\"", "type = \"s3\"\nreads_in_flight = 0", "origins.reads_in_flight: 0"),
        ("type = \"s3\"", "type = \"s3\"\nreads_in_flight = 9", "must be 1 ..= 8"),
    ];
    for (from, to, want) in cases {
        assert!(S3.contains(from), "{from}");
        let err = parse(&S3.replace(from, to)).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("bucket"), "{from} -> {to}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let two = S3.replace("secret_key_file", "secret_key_env = \"S3_SECRET\"\nsecret_key_file");
    assert!(parse(&two).unwrap_err().to_string().contains("more than one"));
    // S3 fields on a local origin, and a local origin without a path.
    let err = parse(&GOOD.replace("priority = 1", "priority = 1\nbucket = \"x\"")).unwrap_err().to_string();
    assert!(err.contains("origins.bucket: only for `type = \"s3\"`"), "{err}");
    let err = parse(&GOOD.replace("priority = 1", "priority = 1\nreads_in_flight = 2")).unwrap_err().to_string();
    assert!(err.contains("origins.reads_in_flight: only for `type = \"s3\"`"), "{err}");
    let eight = parse(&S3.replace("type = \"s3\"", "type = \"s3\"\nreads_in_flight = 8")).unwrap();
    assert!(matches!(eight.origins[0].spec, OriginSpec::S3 { reads_in_flight: 8, .. }));
    let err = parse(&GOOD.replace("path = \"/srv/music\"", "")).unwrap_err().to_string();
    assert!(err.contains("origins.path: required"), "{err}");
    // A misspelt key is still an error naming the line.
    let err = parse(&S3.replace("access_key", "acces_key")).unwrap_err().to_string();
    assert!(err.contains(":11:") && err.contains("acces_key"), "{err}");
}

#[test]
fn the_s3_secret_comes_from_inline_file_or_env_and_never_shows_in_debug() {
    let secret = |config: Config| match &config.origins[0].spec {
        OriginSpec::S3 { secret, .. } => secret.read(&config.origins[0].id).map_err(|e| e.to_string()),
        other => panic!("not an s3 origin: {other:?}"),
    };
    let inline =
        parse(&S3.replace("secret_key_file = \"/etc/musicfs/s3-secret\"", "secret_key = \"hunter2\"")).unwrap();
    assert!(!format!("{inline:?}").contains("hunter2"), "the secret shows in Debug");
    assert_eq!(secret(inline).unwrap(), "hunter2");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let text = S3.replace("/etc/musicfs/s3-secret", file.to_str().unwrap());
    assert_eq!(secret(parse(&text).unwrap()).unwrap(), "from-a-file");
    std::fs::remove_file(&file).unwrap();
    let err = secret(parse(&text).unwrap()).unwrap_err();
    assert!(err.contains("origins.secret_key_file") && err.contains("cannot read"), "{err}");

    let var = format!("MUSICFS_TEST_S3_SECRET_{}", std::process::id());
    let text = S3.replace("secret_key_file = \"/etc/musicfs/s3-secret\"", &format!("secret_key_env = \"{var}\""));
    let err = secret(parse(&text).unwrap()).unwrap_err();
    assert!(err.contains(&var), "{err}");
    // SAFETY: nextest runs each test in its own process; nothing else reads this variable.
    unsafe { std::env::set_var(&var, "from-env") };
    assert_eq!(secret(parse(&text).unwrap()).unwrap(), "from-env");
}

const SFTP: &str = r#"
mount_point = "/mnt/music"
cache_dir = "/var/cache/musicfs"

[[origins]]
id = "nas-sftp"
type = "sftp"
host = "nas.example.com"
user = "music"
private_key_file = "/etc/musicfs/id_ed25519"
known_hosts_file = "/etc/musicfs/known_hosts"
path = "/srv/music"
"#;

#[test]
fn an_sftp_origin_parses_with_its_fields_and_default_port() {
    let config = parse(SFTP).unwrap();
    let o = &config.origins[0];
    assert_eq!(
        o.spec,
        OriginSpec::Sftp {
            host: "nas.example.com".into(),
            port: DEFAULT_SFTP_PORT,
            user: "music".into(),
            private_key_file: "/etc/musicfs/id_ed25519".into(),
            host_key: HostKey::KnownHosts("/etc/musicfs/known_hosts".into()),
            path: "/srv/music".into(),
        }
    );
    assert_eq!(DEFAULT_SFTP_PORT, 22);
    // A port, a fingerprint instead of known_hosts, and a path relative to the login directory.
    let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let other = SFTP
        .replace("user = \"music\"", "user = \"music\"\nport = 2222")
        .replace("known_hosts_file = \"/etc/musicfs/known_hosts\"", &format!("host_key_fingerprint = \"{fp}\""))
        .replace("\"/srv/music\"", "\"music\"");
    let config = parse(&other).unwrap();
    let o = &config.origins[0];
    let OriginSpec::Sftp { port, host_key, path, .. } = &o.spec else { panic!("not sftp: {o:?}") };
    assert_eq!((*port, host_key), (2222, &HostKey::Fingerprint(fp.into())));
    assert_eq!(path, Path::new("music"));
    // Beside a local origin.
    let both = format!("{GOOD}\n{}", &SFTP[SFTP.find("[[origins]]").unwrap()..]);
    let both =
        both.replace("[cache]\nmax_size = \"2GiB\"\nchunk_avg = \"512KiB\"\n\n[fuse]\nread_timeout = \"10s\"\n", "");
    assert_eq!(parse(&both).unwrap().origins.len(), 2);
}

#[test]
fn sftp_origins_need_their_own_fields_and_a_known_host_key() {
    let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let known = "known_hosts_file = \"/etc/musicfs/known_hosts\"\n";
    let cases: [(&str, String, &str); 14] = [
        ("host = \"nas.example.com\"\n", String::new(), "origins.host: required"),
        ("\"nas.example.com\"", "\"music@nas.example.com\"".into(), "origins.host"),
        ("\"nas.example.com\"", "\"sftp://nas\"".into(), "origins.host"),
        ("user = \"music\"\n", String::new(), "origins.user: required"),
        ("user = \"music\"", "user = \"music\"\nport = 0".into(), "origins.port"),
        ("private_key_file = \"/etc/musicfs/id_ed25519\"\n", String::new(), "origins.private_key_file: required"),
        ("\"/etc/musicfs/id_ed25519\"", "\"id_ed25519\"".into(), "origins.private_key_file"),
        (known, String::new(), "unknown host keys are rejected"),
        ("\"/etc/musicfs/known_hosts\"", "\"known_hosts\"".into(), "origins.known_hosts_file"),
        (known, format!("{known}host_key_fingerprint = \"{fp}\"\n"), "give one"),
        (known, "host_key_fingerprint = \"MD5:aa:bb\"\n".into(), "origins.host_key_fingerprint"),
        (known, format!("host_key_fingerprint = \"{}\"\n", &fp[..40]), "origins.host_key_fingerprint"),
        ("path = \"/srv/music\"\n", String::new(), "origins.path: required"),
        ("type = \"sftp\"", "type = \"sftp\"\nbucket = \"x\"".into(), "origins.bucket: only for `type = \"s3\"`"),
    ];
    for (from, to, want) in cases {
        assert!(SFTP.contains(from), "{from}");
        let err = parse(&SFTP.replace(from, &to)).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("nas-sftp"), "{from} -> {to}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A port that does not fit, named with its line.
    let err = parse(&SFTP.replace("user = \"music\"", "user = \"music\"\nport = 70000")).unwrap_err().to_string();
    assert!(err.contains(":10:") && err.contains("70000"), "{err}");
    // SFTP fields on other types.
    let err = parse(&GOOD.replace("priority = 1", "priority = 1\nhost = \"x\"")).unwrap_err().to_string();
    assert!(err.contains("origins.host: only for `type = \"sftp\"` origins (origin `nas` is local)"), "{err}");
    let err = parse(&S3.replace("access_key", "known_hosts_file = \"/k\"\naccess_key")).unwrap_err().to_string();
    assert!(err.contains("origins.known_hosts_file: only for `type = \"sftp\"`"), "{err}");
    assert!(is_sha256_fingerprint(fp) && !is_sha256_fingerprint("sha256:x"));
}

#[test]
fn a_missing_file_is_one_clear_line() {
    let err = Config::load(Path::new("/nonexistent/musicfs.toml")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/musicfs.toml") && err.contains("cannot read"), "{err}");
}

#[test]
fn a_validation_error_names_its_key() {
    let mut config = Config::with_defaults("/m".into(), "/c".into());
    assert_eq!(config.validate().unwrap_err().key, "origins");
    config.origins.push(Origin::local("nas", 0, "/srv/music".into()));
    config.fuse.threads = 0;
    let err = config.validate().unwrap_err();
    assert_eq!((err.key.as_str(), err.to_string().as_str()), ("fuse.threads", "fuse.threads: must be 1..=64"));
}
