# MusicFS as a Nix flake: packages, a NixOS module, a NixOS VM resilience test and a dev shell.
#
# Nothing here has been evaluated against nixpkgs (the machine it was written on cannot fetch it). Checked:
#   for f in flake.nix modules/*.nix nixos-tests/*.nix nix/*.nix nix/stub-nixpkgs/*.nix; do nix-instantiate --parse "$f" >/dev/null; done
# `bash nix/check.sh` runs that, then evaluates the module and these outputs against stubs of lib and
# nixpkgs (unit parity with dist/musicfs.service, output wiring). Details and limits: nixos-tests/README.md.
#
# No flake.lock is committed (it could not be generated offline); the first `nix flake lock` or
# `nix build` creates one, pinning nixos-unstable. rustc there must be >= 1.95 (Cargo.toml rust-version).
{
  description = "MusicFS: a read-only FUSE filesystem that shows a music library by its tags";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      pkgsFor = lib.genAttrs systems (
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
          # MinIO is marked insecure in nixpkgs. Only the S3 node of nixos-tests/lib.nix (network-vm)
          # needs it, and VM test nodes cannot change nixpkgs.config themselves, so it is allowed here.
          config.allowInsecurePredicate = pkg: lib.getName pkg == "minio";
        }
      );
      forAllSystems = f: lib.genAttrs systems (system: f pkgsFor.${system});
    in
    {
      overlays.default = final: _prev: {
        musicfs = final.callPackage ./nix/package.nix { };
        # Failpoints compiled in (docs/FAILPOINTS.md): for tests only, never for a real machine.
        musicfs-failpoints = final.callPackage ./nix/package.nix { withFailpoints = true; };
        musicfs-probe = final.callPackage ./nix/package.nix { cargoPackage = "musicfs-probe"; };
      };

      packages = forAllSystems (pkgs: {
        inherit (pkgs) musicfs musicfs-failpoints musicfs-probe;
        default = pkgs.musicfs;
      });

      # `services.musicfs`. Its package option defaults to pkgs.musicfs: add overlays.default to
      # nixpkgs.overlays, or set services.musicfs.package = musicfs.packages.${system}.musicfs.
      nixosModules.default = ./modules/musicfs.nix;
      nixosModules.musicfs = ./modules/musicfs.nix;

      checks = forAllSystems (pkgs: {
        # L4: the real unit under real systemd in a VM; needs KVM (runNixOSTest sets
        # requiredSystemFeatures = [ "nixos-test" "kvm" ] on it). `.driverInteractive` for a shell:
        #   nix run .#checks.x86_64-linux.resilience-vm.driverInteractive
        resilience-vm = import ./nixos-tests/resilience.nix {
          inherit pkgs;
          # The failpoints build, so scenarios may inject faults through FAILPOINTS.
          musicfs = pkgs.musicfs-failpoints;
          inherit (pkgs) musicfs-probe;
        };
        # L4 with the network: the unit on S3 (MinIO) and SFTP origins on their own nodes, behind a
        # Toxiproxy node; four VMs (about 8 GiB of guest memory), so a check of its own.
        #   nix build .#checks.x86_64-linux.network-vm
        network-vm = import ./nixos-tests/network.nix {
          inherit pkgs;
          musicfs = pkgs.musicfs-failpoints;
          inherit (pkgs) musicfs-probe;
        };
        # L1: the in-process tests, in the ordinary build sandbox (no FUSE, no servers): see the file.
        cargo-tests = pkgs.callPackage ./nix/cargo-tests.nix { };
      });

      # `nix build .#checks.resilience-vm` (the card's literal path) resolves through this: for an
      # installable without a system, nix tries packages.<system>.<path>, then
      # legacyPackages.<system>.<path>, then <path> itself. On x86_64-linux this is the x86_64-linux
      # test; on aarch64-linux it is that system's own (pointing it at x86_64 would need a remote builder).
      #
      # Why not a top-level `checks.resilience-vm = self.checks.x86_64-linux.resilience-vm;`: `nix flake
      # check` reads every attribute under `checks` as a system name. Plain `nix flake check` (Nix >= 2.14)
      # would only warn that it omitted the "incompatible system" resilience-vm, but
      # `nix flake check --all-systems`, and Nix before 2.14, descend into it and fail outright ("flake
      # attribute 'checks.resilience-vm.name' is not a derivation"). legacyPackages is not descended into
      # by `nix flake check`, and nix tries it before the bare path anyway. To accept that trade-off
      # instead, add next to `checks` above:
      #   checks.resilience-vm = self.checks.x86_64-linux.resilience-vm;   (and merge with `//`)
      legacyPackages = forAllSystems (pkgs: {
        checks.resilience-vm = self.checks.${pkgs.stdenv.hostPlatform.system}.resilience-vm;
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            rustc
            cargo
            cargo-nextest
            rust-analyzer
            clippy
            rustfmt
            pkg-config
            cmake # aws-lc-sys (a dev-dependency) may build with it
            # What the L2/L3 tests run (docs/TESTING.md): FUSE, players, encoder, sshd/sftp, bindfs
            # for the benchmark, and a Toxiproxy server.
            fuse3
            mpv
            vlc
            ffmpeg
            openssh
            bindfs
            toxiproxy
          ];
          buildInputs = [ pkgs.openssl ]; # found by pkg-config (openssl-sys)
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt); # the RFC 166 style (formerly nixfmt-rfc-style)
    };
}
