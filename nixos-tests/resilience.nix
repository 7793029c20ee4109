# L4 system test: the real musicfs.service (modules/musicfs.nix) under real systemd in a NixOS VM, driven
# by musicfs-probe (probes/), one subtest per scenario. See ./README.md.
#
#   nix build .#checks.x86_64-linux.resilience-vm
#   nix run .#checks.x86_64-linux.resilience-vm.driverInteractive
#
# Arguments: pkgs (with nixpkgs' testers), the musicfs package under test (the flake passes the
# failpoints build, so scenarios may set FAILPOINTS; the module itself sets none) and musicfs-probe.
{
  pkgs,
  musicfs,
  musicfs-probe,
}:

let
  testLib = import ./lib.nix { inherit pkgs; };
  sampleLibrary = pkgs.callPackage ./sample-library.nix { };
  origin = "/srv/music";
  mountPoint = "/mnt/music";
in
pkgs.testers.runNixOSTest {
  name = "musicfs-resilience";

  nodes = {
    machine =
      { pkgs, ... }:
      {
        imports = [ ../modules/musicfs.nix ];

        virtualisation.memorySize = 2048; # the unit's MemoryMax is 1G
        virtualisation.cores = 2;

        # The cache on its own small filesystem (the probe's disk-full scenario wants <= 256 MiB and a
        # library larger than it), so filling it fills nothing else. virtualisation.fileSystems, not
        # fileSystems: qemu-vm.nix replaces fileSystems wholesale. A real disk would do as well:
        # virtualisation.emptyDiskImages = [ 64 ] and an ext4 /dev/vdb with autoFormat = true.
        virtualisation.fileSystems."/var/cache/musicfs" = {
          device = "tmpfs";
          fsType = "tmpfs";
          options = [
            "size=32m"
            "mode=0755"
          ];
        };

        systemd.services.musicfs-sample-library = testLib.mkSampleLibraryService {
          library = sampleLibrary;
          target = origin;
        };

        services.musicfs = {
          enable = true;
          package = musicfs;
          settings = {
            mount_point = mountPoint;
            origins = [
              {
                id = "sample";
                type = "local";
                path = origin;
              }
            ];
            # Above the 32 MiB filesystem on purpose: reading the ~48 MB library fills the disk before
            # the size limit, which is what the disk-full scenario exercises (free-space watermarks).
            # Chunks much smaller than the 80-90 % watermark band (3.2 MiB here), or one chunk write would
            # cross both watermarks and the cache would evict on every write (seen with the nspawn runner).
            cache = {
              max_size = "1GiB";
              chunk_min = "64KiB";
              chunk_avg = "256KiB";
              chunk_max = "1MiB";
            };
            library.sync_interval = "30s";
            health.interval = "5s";
            fuse = {
              read_timeout = "10s";
              allow_other = true;
            };
          };
          # Scenarios that need a failpoint set it themselves; at boot none is active.
          failpoints = null;
        };

        # The probe runs musicfs (status, cache verify: the module puts the package on the system PATH),
        # systemctl, journalctl, df, fallocate and dd, all there already, and fusermount3 (also there,
        # programs.fuse being on by default; listed so the need is explicit).
        environment.systemPackages = [
          musicfs-probe
          pkgs.fuse3
        ];
      };

    # The network scenarios (S3, SFTP, Toxiproxy on nodes of their own) are ./network.nix, a check of
    # their own (network-vm), so this one stays a single small VM.
  };

  testScript = ''
    import json

    MOUNT = "${mountPoint}"
    ORIGIN = "${origin}"


    def wait_for_musicfs() -> None:
        machine.wait_for_unit("musicfs.service")
        machine.wait_until_succeeds(f"ls {MOUNT}", timeout=120)


    def content_hashes(root: str) -> str:
        return machine.succeed(
            f"cd {root} && find . -type f -print0 | xargs -0 sha256sum | cut -d' ' -f1 | sort"
        )


    def probe(scenario: str) -> None:
        # machine.execute rather than machine.succeed: the JSON is printed even when the probe fails.
        status, out = machine.execute(f"musicfs-probe {scenario}")
        objects = [line for line in out.splitlines() if line.lstrip().startswith("{")]
        if objects:
            print(f"musicfs-probe {scenario}:")
            print(json.dumps(json.loads(objects[-1]), indent=2, sort_keys=True))
        else:
            print(f"musicfs-probe {scenario} printed no JSON object:\n{out}")
        if status != 0:
            print(machine.execute("journalctl -u musicfs.service --no-pager -n 200")[1])
        assert status == 0, f"musicfs-probe {scenario} failed (exit {status})"


    def recover() -> None:
        # Between crash scenarios: clear the failed state and start-limit counter, make sure it runs.
        machine.succeed("systemctl reset-failed musicfs.service")
        machine.succeed("systemctl start musicfs.service")
        wait_for_musicfs()


    start_all()
    wait_for_musicfs()

    with subtest("the sample library is served by its tags, byte for byte"):
        listing = machine.succeed(f"ls {MOUNT}")
        for artist in ["Ada Quartet", "The Probes"]:
            assert artist in listing, f"{artist!r} missing from {MOUNT}: {listing}"
        assert content_hashes(MOUNT) == content_hashes(ORIGIN), "mount and origin differ"

    with subtest("SIGTERM: ordered shutdown, no mount left behind, clean restart"):
        probe("sigterm")
        recover()

    with subtest("kill -9: systemd restarts it and resumes the kept FUSE connection: no read fails, mpv plays on"):
        probe("kill9")
        recover()

    with subtest("systemctl restart hands the connection over: no read fails, mpv plays on, no remount; stop unmounts"):
        probe("restart")
        recover()

    with subtest("a crash loop past the start limit releases the waiting reader and unmounts; the next start serves"):
        probe("crash-loop")
        recover()

    with subtest("watchdog: a frozen daemon and a stalled self-check are restarted"):
        probe("watchdog")
        recover()

    with subtest("ExecStop: systemctl stop goes through musicfs shutdown; a frozen daemon is killed"):
        probe("execstop")
        recover()

    with subtest("disk full: the cache filesystem fills up and the daemon keeps serving"):
        probe("disk-full")
        recover()

    with subtest("readiness: READY=1 once the mount answers, STATUS= kept current, STOPPING=1 at shutdown"):
        probe("readiness")
        recover()

    with subtest("limits: the unit's resource bounds are what the running daemon has, cgroups included"):
        probe("limits")
        recover()

    with subtest("security: systemd-analyze security of the unit stays within 2.0"):
        probe("security")

    with subtest("privilege: the daemon runs as musicfs with no capability; nobody reads the mount; kill -9 resumes"):
        probe("privilege")
        recover()

    with subtest("soak: kill -9 at random moments (first scan, ingest, delta sync); nothing lost, cache sound"):
        probe("soak")
        recover()

    with subtest("after every scenario the library still reads back intact"):
        assert content_hashes(MOUNT) == content_hashes(ORIGIN), "mount and origin differ"
  '';
}
