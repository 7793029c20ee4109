# Building blocks for MusicFS NixOS VM tests: an S3 server, an SFTP server and a fault-injecting proxy,
# used by ./network.nix (the network scenarios, issue 9), and the sample library of ./resilience.nix.
# Each `*Node` is a NixOS module; add it to a test's `nodes`:
#
#   nodes = {
#     machine = { ... };                  # musicfs + musicfs-probe, as in ./resilience.nix
#     minio = testLib.minioNode;          # S3 on minio:9000
#     sftp = testLib.sftpNode;            # OpenSSH internal-sftp on sftp:22, user `music`
#     proxy = testLib.toxiproxyNode;      # Toxiproxy API on proxy:8474, proxies on 20000-20099
#   };
#
# The test driver puts every node on one virtual network and resolves node names, so the musicfs
# machine reaches them as `minio`, `sftp` and `proxy` (and a proxied origin as e.g. `proxy:20000`).
#
# MinIO: nixpkgs marks it insecure (upstream stopped shipping free builds), so the pkgs that evaluates
# the test must permit it; the flake does that with `config.allowInsecurePredicate`. The nodes of
# pkgs.testers.runNixOSTest use that pkgs read-only: setting nixpkgs.config inside a node is an error.
# Garage (services.garage) is the alternative S3 server if MinIO goes away.
{ pkgs }:

let
  inherit (pkgs) lib;
  # The well-known throwaway key pair of the nixpkgs tests: fine inside a VM test, nowhere else.
  snakeOil = import "${pkgs.path}/nixos/tests/ssh-keys.nix" pkgs;
in
rec {
  # Test-only credentials, shared by the S3 node and the musicfs machine's environmentFile.
  s3 = {
    accessKey = "musicfs";
    secretKey = "musicfs-test-secret";
    bucket = "music";
    port = 9000;
  };
  sftp = {
    user = "music";
    root = "/srv/music";
    privateKey = snakeOil.snakeOilPrivateKey;
  };

  # A systemd service around toxiproxy-server: there is no Toxiproxy NixOS module.
  # `proxies`: created at start (toxiproxy-server -config, in toxiproxy >= 2.1), each
  # { name; listen = "0.0.0.0:20000"; upstream = "minio:9000"; enabled = true; }; none by default (then
  # a test creates them through the API).
  mkToxiproxyService =
    {
      host ? "0.0.0.0",
      port ? 8474,
      proxies ? [ ],
    }:
    let
      config = pkgs.writeText "toxiproxy.json" (builtins.toJSON proxies);
    in
    {
      description = "Toxiproxy: a TCP proxy that injects network faults";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      serviceConfig = {
        ExecStart =
          "${pkgs.toxiproxy}/bin/toxiproxy-server -host ${host} -port ${toString port}"
          + lib.optionalString (proxies != [ ]) " -config ${config}";
        DynamicUser = true;
        Restart = "on-failure";
      };
    };

  mkToxiproxyNode =
    {
      proxies ? [ ],
    }:
    {
      systemd.services.toxiproxy = mkToxiproxyService { inherit proxies; };
      environment.systemPackages = [ pkgs.toxiproxy ]; # toxiproxy-cli for interactive runs
      networking.firewall.allowedTCPPorts = [ 8474 ];
      networking.firewall.allowedTCPPortRanges = [
        {
          from = 20000;
          to = 20099;
        }
      ];
    };

  toxiproxyNode = mkToxiproxyNode { };

  minioNode = {
    services.minio = {
      enable = true;
      listenAddress = ":${toString s3.port}";
      # Was rootCredentialsFile (renamed in nixpkgs).
      environmentFile = pkgs.writeText "minio-root-credentials" ''
        MINIO_ROOT_USER=${s3.accessKey}
        MINIO_ROOT_PASSWORD=${s3.secretKey}
      '';
    };
    # As nixpkgs' own MinIO test: MinIO wants at least 1 GiB free on its data disk.
    virtualisation.diskSize = 4096;
    virtualisation.memorySize = 4096;
    environment.systemPackages = [ pkgs.minio-client ]; # `mc` to create the bucket and upload music
    networking.firewall.allowedTCPPorts = [ s3.port ];
  };

  sftpNode = {
    services.openssh = {
      enable = true;
      sftpServerExecutable = "internal-sftp";
      settings.PasswordAuthentication = false;
    };
    users.users.${sftp.user} = {
      isNormalUser = true;
      openssh.authorizedKeys.keys = [ snakeOil.snakeOilPublicKey ];
    };
    systemd.tmpfiles.rules = [ "d ${sftp.root} 0755 ${sftp.user} users -" ];
    networking.firewall.allowedTCPPorts = [ 22 ];
  };

  # The sample library (./sample-library.nix), copied at boot to a writable origin directory before
  # musicfs starts (writable, so scenarios may change the origin under a running daemon).
  mkSampleLibraryService =
    { library, target }:
    {
      description = "Copy the MusicFS sample library to ${target}";
      wantedBy = [ "musicfs.service" ];
      before = [ "musicfs.service" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        if [ ! -d ${lib.escapeShellArg target} ]; then
          mkdir -p "$(dirname ${lib.escapeShellArg target})"
          rm -rf ${lib.escapeShellArg "${target}.tmp"}
          cp -r --no-preserve=mode,ownership ${library} ${lib.escapeShellArg "${target}.tmp"}
          mv ${lib.escapeShellArg "${target}.tmp"} ${lib.escapeShellArg target}
        fi
      '';
    };
}
