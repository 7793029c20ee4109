# L4 with the network: the real musicfs.service (modules/musicfs.nix) on a local, an S3 and an SFTP origin,
# the remote ones on their own nodes behind a Toxiproxy node, broken by musicfs-probe's network scenarios
# (probes/src/scenarios/network.rs), one subtest each. A check of its own (`network-vm`) beside
# resilience-vm: four VMs and six scenarios in one test would make every run of either slow. See ./README.md.
#
#   nix build .#checks.x86_64-linux.network-vm
#   nix run .#checks.x86_64-linux.network-vm.driverInteractive
#
# Nodes (the driver puts them on one network and resolves their names):
#   machine  musicfs + musicfs-probe; local mirrors of the remote libraries, which the probe checks every
#            byte against and writes new tracks into (then uploads them to the real servers)
#   minio    S3 on minio:9000, bucket `music`
#   sftp     OpenSSH internal-sftp on sftp:22, user `music`, library in /srv/music
#   proxy    Toxiproxy: API proxy:8474, `s3` proxy:20000 -> minio:9000, `sftp` proxy:20001 -> sftp:22
#
# The config is the nspawn runner's (xtask/src/system_test/servers.rs) with the servers moved: origins
# `disk` (local /srv/music), `bucket` (S3 at http://s3.musicfs.test:20000, a name the machine's /etc/hosts
# gives the proxy node, so the dns scenario can take it away), `bucket-copy` (local /srv/s3/music,
# backup_for bucket: also the machine's mirror of the bucket) and `nas` (SFTP via proxy:20001, mirrored in
# /srv/sftp/music). The S3 secret reaches the unit only through its environment file.
{
  pkgs,
  musicfs,
  musicfs-probe,
}:

let
  testLib = import ./lib.nix { inherit pkgs; };
  mountPoint = "/mnt/music";
  s3Host = "s3.musicfs.test"; # probes/src/faults.rs S3_HOST
  # Written by the test script before musicfs starts (ssh-keyscan of the proxied and the direct port).
  knownHosts = "/var/lib/musicfs-test/known_hosts";
  knownHostsDirect = "/var/lib/musicfs-test/known_hosts_direct";
  privateKey = "/etc/musicfs/id_ed25519";
in
pkgs.testers.runNixOSTest {
  name = "musicfs-network";

  nodes = {
    machine =
      {
        pkgs,
        lib,
        nodes,
        ...
      }:
      {
        imports = [ ../modules/musicfs.nix ];

        virtualisation.memorySize = 2048; # the unit's MemoryMax is 1G
        virtualisation.cores = 2;

        # A line of its own for the S3 name (the probe's dns scenario takes the name out of /etc/hosts,
        # which it replaces by a regular file: here a symlink into the store).
        networking.extraHosts = "${nodes.proxy.networking.primaryIPAddress} ${s3Host}";

        # The snakeoil key of the nixpkgs tests is a 0444 store path and ssh refuses a key others can
        # read: a copy, 0600 for musicfs (the unit's User=), in place before musicfs could start.
        environment.etc."musicfs/id_ed25519" = {
          source = testLib.sftp.privateKey;
          mode = "0600";
          user = "musicfs";
          group = "musicfs";
        };
        # The S3 secret, for the unit's EnvironmentFile= only (a test-only value; the MinIO node's
        # credentials hold it as well).
        environment.etc."musicfs/s3.env" = {
          text = "MUSICFS_S3_SECRET=${testLib.s3.secretKey}\n";
          mode = "0600";
        };

        services.musicfs = {
          enable = true;
          package = musicfs;
          environmentFile = "/etc/musicfs/s3.env";
          settings = {
            mount_point = mountPoint;
            origins = [
              {
                id = "disk";
                type = "local";
                path = "/srv/music";
              }
              {
                id = "bucket";
                type = "s3";
                priority = 1;
                endpoint = "http://${s3Host}:20000";
                bucket = testLib.s3.bucket;
                access_key = testLib.s3.accessKey;
                secret_key_env = "MUSICFS_S3_SECRET";
              }
              {
                id = "bucket-copy";
                type = "local";
                path = "/srv/s3/music";
                backup_for = "bucket";
              }
              {
                id = "nas";
                type = "sftp";
                priority = 2;
                host = "proxy";
                port = 20001;
                user = testLib.sftp.user;
                private_key_file = privateKey;
                known_hosts_file = knownHosts;
                path = testLib.sftp.root;
              }
            ];
            # What the probe's network scenarios assume (READ_TIMEOUT, SYNC_INTERVAL, HEALTH_INTERVAL in
            # probes/src/scenarios/network.rs), as in the nspawn runner.
            library.sync_interval = "10s";
            health.interval = "2s";
            fuse = {
              read_timeout = "10s";
              allow_other = true;
            };
          };
          failpoints = null;
        };
        # Started by the test script, once the servers, the proxies, the known hosts and the libraries
        # are there.
        systemd.services.musicfs.wantedBy = lib.mkForce [ ];

        environment.systemPackages = [
          musicfs-probe
          pkgs.fuse3
          pkgs.curl # --aws-sigv4: uploads to MinIO
          pkgs.openssh # scp, ssh-keyscan
          pkgs.mpv # origin-outage plays a cached track with a real player (4.2.3)
        ];
      };

    minio = testLib.minioNode;
    sftp = testLib.sftpNode;
    proxy = testLib.mkToxiproxyNode {
      proxies = [
        {
          name = "s3";
          listen = "0.0.0.0:20000";
          upstream = "minio:${toString testLib.s3.port}";
          enabled = true;
        }
        {
          name = "sftp";
          listen = "0.0.0.0:20001";
          upstream = "sftp:22";
          enabled = true;
        }
      ];
    };
  };

  testScript = ''
    import json
    import shlex

    MOUNT = "${mountPoint}"
    KNOWN_HOSTS = "${knownHosts}"
    KNOWN_HOSTS_DIRECT = "${knownHostsDirect}"
    SFTP_ROOT = "${testLib.sftp.root}"
    # The libraries: a few files of random bytes per origin, untagged (the probe finds them under
    # Unknown Artist/Unknown Album), distinct names across origins.
    FILES = 3
    MIRRORS = {"disk": "/srv/music", "bucket": "/srv/s3/music", "nas": "/srv/sftp/music"}

    # How a new track reaches each remote server: run by the probe (--upload) after it writes the file
    # into the machine's mirror, straight to the server (not through the proxy, so that an upload works
    # during a partition, as partition-heal wants). {file} and {name} are the probe's placeholders.
    UPLOADS = {
        "bucket": (
            "curl --fail --silent --show-error --aws-sigv4 aws:amz:us-east-1:s3"
            " --user ${testLib.s3.accessKey}:${testLib.s3.secretKey}"
            " -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD'"
            " -T {file} http://minio:${toString testLib.s3.port}/${testLib.s3.bucket}/{name}"
        ),
        "nas": (
            "scp -q -i ${privateKey} -o BatchMode=yes"
            f" -o UserKnownHostsFile={KNOWN_HOSTS_DIRECT}"
            f" {{file}} ${testLib.sftp.user}@sftp:{SFTP_ROOT}/{{name}}"
        ),
    }
    PROBE_ENV = "TOXIPROXY_API=proxy:8474"
    PROBE_FLAGS = " ".join(
        [f"--origin-dir nas={MIRRORS['nas']}"]
        + [shlex.quote(f"--upload={origin}={command}") for origin, command in UPLOADS.items()]
    )


    def upload(origin: str, path: str) -> None:
        name = path.rsplit("/", 1)[1]
        command = UPLOADS[origin].replace("{file}", shlex.quote(path)).replace("{name}", shlex.quote(name))
        machine.succeed(command)


    def mount_files() -> int:
        return int(machine.succeed(f"find {MOUNT} -type f | wc -l").strip())


    def content_hashes(*roots: str) -> str:
        return machine.succeed(
            f"find {' '.join(roots)} -type f -print0 | xargs -0 sha256sum | cut -d' ' -f1 | sort"
        )


    def wait_for_musicfs() -> None:
        machine.wait_for_unit("musicfs.service")
        machine.wait_until_succeeds(f"ls {MOUNT}", timeout=120)


    def probe(scenario: str) -> None:
        # machine.execute rather than machine.succeed: the JSON is printed even when the probe fails.
        status, out = machine.execute(f"{PROBE_ENV} musicfs-probe {scenario} {PROBE_FLAGS}", timeout=600)
        objects = [line for line in out.splitlines() if line.lstrip().startswith("{")]
        if objects:
            print(f"musicfs-probe {scenario}:")
            print(json.dumps(json.loads(objects[-1]), indent=2, sort_keys=True))
        else:
            print(f"musicfs-probe {scenario} printed no JSON object:\n{out}")
        if status != 0:
            print(machine.execute("journalctl -u musicfs.service --no-pager -n 200")[1])
            print(machine.execute("curl --silent http://proxy:8474/proxies")[1])
        assert status == 0, f"musicfs-probe {scenario} failed (exit {status})"


    start_all()

    with subtest("servers: MinIO with its bucket, sshd, the proxies"):
        minio.wait_for_unit("minio.service")
        minio.wait_for_open_port(${toString testLib.s3.port})
        minio.succeed(
            "mc alias set local http://localhost:${toString testLib.s3.port}"
            " ${testLib.s3.accessKey} ${testLib.s3.secretKey}",
            "mc mb --ignore-existing local/${testLib.s3.bucket}",
        )
        sftp.wait_for_unit("sshd.service")
        sftp.wait_for_open_port(22)
        proxy.wait_for_unit("toxiproxy.service")
        proxy.wait_for_open_port(8474)
        proxy.wait_for_open_port(20000)
        proxy.wait_for_open_port(20001)
        machine.wait_for_unit("multi-user.target")
        # The proxies answer from the machine, each reaching its server.
        machine.wait_until_succeeds("curl --fail --silent http://proxy:8474/proxies | grep -q sftp", timeout=60)
        machine.wait_until_succeeds(
            "curl --silent --output /dev/null --write-out '%{http_code}' http://${s3Host}:20000/ | grep -q 403",
            timeout=60,
        )

    with subtest("the SFTP server's host key, pinned for musicfs (via the proxy) and for uploads (direct)"):
        machine.succeed("mkdir -p /var/lib/musicfs-test")
        machine.wait_until_succeeds(
            f"ssh-keyscan -T 10 -p 20001 -t ed25519 proxy > {KNOWN_HOSTS}.tmp && test -s {KNOWN_HOSTS}.tmp"
            f" && mv {KNOWN_HOSTS}.tmp {KNOWN_HOSTS}",
            timeout=60,
        )
        machine.wait_until_succeeds(
            f"ssh-keyscan -T 10 -t ed25519 sftp > {KNOWN_HOSTS_DIRECT}.tmp && test -s {KNOWN_HOSTS_DIRECT}.tmp"
            f" && mv {KNOWN_HOSTS_DIRECT}.tmp {KNOWN_HOSTS_DIRECT}",
            timeout=60,
        )
        # The same key both ways: the proxy forwards to the sftp node's sshd.
        assert machine.succeed(f"cut -d' ' -f2- {KNOWN_HOSTS}") == machine.succeed(
            f"cut -d' ' -f2- {KNOWN_HOSTS_DIRECT}"
        ), "the proxied and the direct SFTP host keys differ"

    with subtest("the same libraries on the servers and in the machine's mirrors"):
        machine.succeed("mkdir -p " + " ".join(MIRRORS.values()))
        for origin, mirror in MIRRORS.items():
            for i in range(FILES):
                path = f"{mirror}/{origin}-{i}.wav"
                machine.succeed(f"head -c 2M /dev/urandom > {path}")
                if origin in UPLOADS:
                    upload(origin, path)
        assert minio.succeed("mc ls local/${testLib.s3.bucket} | wc -l").strip() == str(FILES)
        assert sftp.succeed(f"ls {SFTP_ROOT} | wc -l").strip() == str(FILES)
        assert sftp.succeed(f"cd {SFTP_ROOT} && sha256sum * | sort") == machine.succeed(
            f"cd {MIRRORS['nas']} && sha256sum * | sort"
        ), "the SFTP server's library is not the machine's mirror"

    with subtest("musicfs serves every origin's files, byte for byte"):
        machine.succeed("systemctl start musicfs.service")
        wait_for_musicfs()
        machine.wait_until_succeeds(f"test $(find {MOUNT} -type f | wc -l) -eq {3 * FILES}", timeout=120)
        assert content_hashes(MOUNT) == content_hashes(*MIRRORS.values()), "mount and mirrors differ"
        status = json.loads(machine.succeed("musicfs status --json --config /etc/musicfs/musicfs.toml"))
        assert status["state"] == "ready", f"not ready: {status}"

    with subtest("origin-outage (4.2.3): every origin away, cached tracks play, uncached fail fast, heal"):
        probe("origin-outage")

    with subtest("s3-latency (N1): below the hedge floor no failover; above it hedged, no error, origin up"):
        probe("s3-latency")

    with subtest("s3-cut-failover (N2, 4.2.6): S3 cut mid-stream, the backup finishes it, re-validated"):
        probe("s3-cut-failover")

    with subtest("sftp-drop (N3): SFTP connections reset mid-read"):
        probe("sftp-drop")

    with subtest("partition-heal (N4): both remote origins cut and healed, no restart, new track listed"):
        probe("partition-heal")

    with subtest("dns (4.2.5): the S3 endpoint's name stops resolving, then resolves again"):
        probe("dns")
        # The probe put the S3 name back (as a regular /etc/hosts: fine in a test VM).
        machine.succeed("getent hosts ${s3Host}")

    with subtest("after every scenario the unit still serves every origin, byte for byte"):
        assert mount_files() == int(
            machine.succeed("find " + " ".join(MIRRORS.values()) + " -type f | wc -l").strip()
        ), "mount and mirrors list different numbers of files"
        assert content_hashes(MOUNT) == content_hashes(*MIRRORS.values()), "mount and mirrors differ"
        assert machine.succeed("systemctl show -p NRestarts --value musicfs.service").strip() == "0"
  '';
}
