# NixOS module for MusicFS: `services.musicfs`.
#
# It reproduces dist/musicfs.service setting for setting (the unit test in
# crates/musicfs-daemon/tests/unit_file.rs states why each one is there; nix/check.sh compares the two).
# Differences: paths are Nix store paths (no /usr/local/bin, no /bin/kill), the config file is generated
# from `settings`, RequiresMountsFor= orders the unit after the cache directory's mount, and
# EnvironmentFile=/FAILPOINTS come from options, and a cache_dir outside /var/cache gets ReadWritePaths= and a
# tmpfiles rule instead of CacheDirectory=.
#
# Privilege split (issue 16): the daemon runs as the system user `musicfs` in a sandbox, with no capability,
# no /dev/fuse and no mount syscalls; `ExecStartPre=+… mount-helper` mounts as root outside the sandbox
# (so the mount is visible to every user) and hands the connection over through the fd store.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.musicfs;
  settingsFormat = pkgs.formats.toml { };
  configFile = settingsFormat.generate "musicfs.toml" cfg.settings;
  configPath = "/etc/musicfs/musicfs.toml";
  exe = lib.getExe' cfg.package "musicfs";
  mountPoint = cfg.settings.mount_point;
  cacheDir = cfg.settings.cache_dir;

  # Strings, not Nix paths: a path literal would be copied into the store by the TOML generator.
  absolutePath = lib.types.strMatching "/.*";

  # systemd creates (and owns) the cache directory when it lies under /var/cache.
  cacheDirectory =
    if lib.hasPrefix "/var/cache/" cacheDir then lib.removePrefix "/var/cache/" cacheDir else null;

  originType = lib.types.submodule {
    freeformType = settingsFormat.type;
    options = {
      id = lib.mkOption {
        type = lib.types.strMatching "[A-Za-z0-9_-]+";
        example = "nas";
        description = "Short stable name of the origin; it is stored with every track (renaming it means a rescan).";
      };
      type = lib.mkOption {
        type = lib.types.str;
        default = "local";
        description = ''
          Kind of origin. `local` (a directory: local disk, NFS or SMB mount) takes `path` (absolute);
          `s3` (an S3-compatible bucket) takes `endpoint`, `bucket`, `access_key`, optionally `prefix` and
          `region`, and its secret as `secret_key_env` (a variable set in
          {option}`services.musicfs.environmentFile`) or `secret_key_file`, never inline here. `sftp` (a
          directory on an SSH server) takes `host`, optionally `port` (default 22), `user`,
          `private_key_file` (absolute, no passphrase, readable by the service), `path` (the directory on
          the server) and one of `known_hosts_file` or `host_key_fingerprint` (`SHA256:…`): unknown host
          keys are refused. Every kind takes `priority` (lower is preferred, default 0).
        '';
      };
    };
  };
in
{
  options.services.musicfs = {
    enable = lib.mkEnableOption "MusicFS, a read-only FUSE filesystem that shows a music library by its tags";

    package = lib.mkPackageOption pkgs "musicfs" {
      extraDescription = ''
        `pkgs.musicfs` is not in nixpkgs: it comes from this repository's flake, through
        `overlays.default` (which also provides `pkgs.musicfs-failpoints` and `pkgs.musicfs-probe`).
        Without the overlay, set this to `musicfs.packages.''${system}.musicfs`.
      '';
    };

    settings = lib.mkOption {
      default = { };
      description = ''
        MusicFS configuration, written as TOML to `${configPath}` (see the README's configuration
        reference). Unknown keys are errors: the daemon refuses to start rather than ignore a typo, so set
        only the keys it knows: `mount_point`, `cache_dir`, `[[origins]]`, `[cache]` (max_size, chunk_min,
        chunk_avg, chunk_max, memory), `[library]` (sync_interval), `[health]` (interval, timeout),
        `[fuse]` (read_timeout, threads, allow_other) and `[logging]` (level). Sizes are integers or
        strings such as `"10GiB"`; durations are seconds or strings such as `"30s"`.
      '';
      example = lib.literalExpression ''
        {
          origins = [ { id = "nas"; type = "local"; path = "/srv/music"; } ];
          cache.max_size = "20GiB";
          fuse = { read_timeout = "20s"; allow_other = true; };
        }
      '';
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          mount_point = lib.mkOption {
            type = absolutePath;
            default = "/mnt/music";
            description = "Where the library appears. The daemon creates the directory.";
          };
          cache_dir = lib.mkOption {
            type = absolutePath;
            default = "/var/cache/musicfs";
            description = ''
              Chunk cache, chunk index, metadata database and lock file. Under `/var/cache` it is the
              unit's `CacheDirectory=`; elsewhere the daemon creates it.
            '';
          };
          origins = lib.mkOption {
            type = lib.types.listOf originType;
            default = [ ];
            example = lib.literalExpression ''[ { id = "nas"; type = "local"; path = "/srv/music"; } ]'';
            description = "Where the music comes from (`[[origins]]`); at least one is required.";
          };
          fuse = lib.mkOption {
            default = { };
            description = "The `[fuse]` table (read_timeout, threads, allow_other).";
            type = lib.types.submodule {
              freeformType = settingsFormat.type;
              options.allow_other = lib.mkOption {
                type = lib.types.bool;
                default = false;
                description = "Let users other than the daemon's own (musicfs) read the mount, such as a music player's user; the mount helper mounts as root, so {file}`/etc/fuse.conf` needs no `user_allow_other`.";
              };
            };
          };
        };
      };
    };

    environmentFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/run/secrets/musicfs.env";
      description = ''
        File of `NAME=value` lines passed as systemd `EnvironmentFile=`: the place for S3 secret keys
        (named by an origin's `secret_key_env`) so they stay out of the world-readable Nix store. SFTP
        origins need nothing here: they log in with `private_key_file`. Give it as a string, not a Nix
        path literal, or the file is copied into the store.
      '';
    };

    failpoints = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "daemon::watchdog::selfcheck_stall=return";
      description = ''
        For tests only: the `FAILPOINTS` environment variable of the daemon (docs/FAILPOINTS.md). It has an
        effect only with a package built with the `failpoints` cargo feature, such as the flake's
        `musicfs-failpoints`; a release build ignores it. Never set this on a machine you rely on.
      '';
    };

    watchdogSec = lib.mkOption {
      type = lib.types.ints.unsigned;
      default = 30;
      description = ''
        systemd `WatchdogSec=`, in seconds. The daemon sends `WATCHDOG=1` only while its self-checks pass,
        so a hung daemon is killed and restarted. 0 turns the watchdog off.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.settings.origins != [ ];
        message = "services.musicfs.settings.origins: at least one origin is required (the daemon refuses to start without one).";
      }
    ];

    warnings = lib.optional (
      cfg.failpoints != null
    ) "services.musicfs.failpoints is set: failpoints are for tests only, and need a package built with the `failpoints` feature.";

    boot.kernelModules = [ "fuse" ];

    # The daemon's user; the mount helper makes it the mount's owner.
    users.users.musicfs = {
      isSystemUser = true;
      group = "musicfs";
      description = "MusicFS daemon";
    };
    users.groups.musicfs = { };
    # A cache outside /var/cache is made the service user's (CacheDirectory= does that under /var/cache).
    systemd.tmpfiles.rules = lib.optional (cacheDirectory == null) "d ${cacheDir} 0700 musicfs musicfs - -";

    environment.etc."musicfs/musicfs.toml".source = configFile;
    # `musicfs cache verify|repair`, `musicfs shutdown` and friends for the administrator.
    environment.systemPackages = [ cfg.package ];

    systemd.services.musicfs = {
      description = "MusicFS: a music library by its tags, cached for offline playback";
      documentation = [ "man:fusermount3(1)" ];
      wants = [ "network-online.target" ];
      after = [
        "network-online.target"
        "remote-fs.target"
      ];
      wantedBy = [ "multi-user.target" ];
      # A changed config restarts the daemon: SIGHUP applies only some keys live (3.6).
      restartTriggers = [ configFile ];
      unitConfig.RequiresMountsFor = [ cacheDir ];
      # 2.11: a crash loop past the start limit ends unmounted, not with a dead mount.
      onFailure = [ "musicfs-unmount.service" ];

      environment = {
        MUSICFS_CONFIG = configPath;
        MUSICFS_MOUNT_POINT = mountPoint;
      }
      // lib.optionalAttrs (cfg.failpoints != null) { FAILPOINTS = cfg.failpoints; };

      serviceConfig = {
        Type = "notify";
        # exec: the mount helper's FDSTORE=1 (ExecStartPre) is accepted too, not only the daemon's messages.
        NotifyAccess = "exec";
        User = "musicfs";
        Group = "musicfs";
        # Mounts as root and stores the connection as `fuse-mounted`; on a restart, while the store holds
        # the live connection (2.11), it leaves mount and store alone.
        ExecStartPre = "+${exe} mount-helper --config ${configPath} --unit %n --owner musicfs";
        ExecStart = "${exe} mount --config ${configPath}";
        ExecStartPost = "+-${exe} after-start ${mountPoint}";
        # 3.7: a real, ordered shutdown through the control socket; returns once the daemon has exited. When
        # systemd is restarting the unit (2.11), the daemon hands its FUSE connection over instead.
        ExecStop = "${exe} shutdown --config ${configPath} --drain-timeout 5s --unit %n";
        # 2.7 / 3.7 safety net: unmount whenever the unit really stops ("-": never fails the stop); keep the
        # mount when systemd starts the daemon again (restart, crash, watchdog), which resumes it (2.11).
        ExecStopPost = "+-${exe} after-stop --unit %n ${mountPoint}";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        # 2.11: readers wait (never fail) while the daemon restarts: keep the wait short.
        RestartSec = "500ms";
        # 2.11: the FUSE connection outlives the daemon here; `musicfs shutdown --restart` exits 75.
        # Two: the helper's fresh connection and the daemon's kept one overlap for a moment at start.
        FileDescriptorStoreMax = 2;
        RestartForceExitStatus = "75";
        # The first start scans the whole library; later starts load it from the database.
        TimeoutStartSec = "15min";
        TimeoutStopSec = "30s";
        # 3.1: WATCHDOG=1 is sent only while the self-checks pass; a hung daemon is restarted.
        WatchdogSec = "${toString cfg.watchdogSec}s";
        CacheDirectory = lib.mkIf (cacheDirectory != null) cacheDirectory;
        ReadWritePaths = lib.mkIf (cacheDirectory == null) [ cacheDir ];
        CacheDirectoryMode = lib.mkIf (cacheDirectory != null) "0700";
        RuntimeDirectory = "musicfs";
        # The control socket's directory: the daemon's user's alone (the socket checks peer credentials too).
        RuntimeDirectoryMode = "0700";
        EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;

        # 5.8: bounds on runaway resource use.
        LimitNOFILE = 65536;
        MemoryHigh = "768M";
        MemoryMax = "1G";
        TasksMax = 2048;
        OOMScoreAdjust = -200;

        # The sandbox. Nothing in it can hide the mount: the helper mounted it outside, before the daemon's
        # namespace was made, and host mounts propagate into it.
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        ProtectSystem = "strict";
        PrivateMounts = true;
        ProtectHome = "read-only";
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateIPC = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RemoveIPC = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged @resources"
        ];
        SystemCallErrorNumber = "EPERM";
        # The cache and the control socket are the service user's alone (the daemon sets umask 077 too).
        UMask = "0077";
      };
    };

    # dist/musicfs-unmount.service: run by musicfs.service's OnFailure=. Its own ExecStopPost= keeps the
    # mount after each failed attempt (systemd starts it again and resumes the mount); once the restarts
    # stop, this unmounts. OnFailure= fires on every failed attempt, a restart's hand-over (exit 75)
    # included: --on-failure unmounts only when the unit stays failed with nothing queued.
    systemd.services.musicfs-unmount = {
      description = "MusicFS: unmount the library of a musicfs.service that has failed";
      documentation = [ "man:systemd.unit(5)" ];
      environment.MUSICFS_MOUNT_POINT = mountPoint;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${exe} after-stop --on-failure --unit musicfs.service ${mountPoint}";
      };
    };
  };
}
