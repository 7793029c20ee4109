# One binary of the MusicFS workspace, built with rustPlatform.buildRustPackage.
#   callPackage ./package.nix { }                                   -> musicfs
#   callPackage ./package.nix { withFailpoints = true; }            -> musicfs-failpoints (--features failpoints)
#   callPackage ./package.nix { cargoPackage = "musicfs-probe"; }   -> musicfs-probe (probes/)
# Tests stay off (doCheck = false): they need /dev/fuse, mpv, sshd, S3 and Toxiproxy servers, none of
# which the build sandbox has; the flake's checks.cargo-tests runs the in-process layer instead.
{
  lib,
  rustPlatform,
  pkg-config,
  cargoPackage ? "musicfs",
  withFailpoints ? false,
}:

let
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = cargoPackage + lib.optionalString withFailpoints "-failpoints";
  inherit (workspace.workspace.package) version;

  src = import ./source.nix { inherit lib; };
  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "-p"
    cargoPackage
  ];
  buildFeatures = lib.optionals withFailpoints [ "failpoints" ];

  # fuser is built without its `libfuse` feature (pure-Rust mount) and rusqlite bundles SQLite, so the
  # binaries link no system library; pkg-config is here for the -sys crates that probe anyway.
  # openssl-sys and aws-lc-sys are only reached through dev-dependencies (musicfs-test-utils).
  nativeBuildInputs = [ pkg-config ];

  doCheck = false;

  meta = {
    description =
      if cargoPackage == "musicfs-probe" then
        "System-level resilience probes for the musicfs.service unit (run inside the machine under test)"
      else
        "Read-only FUSE filesystem that shows a music library by its tags"
        + lib.optionalString withFailpoints " (failpoints compiled in: tests only)";
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = cargoPackage;
    platforms = lib.platforms.linux;
  };
}
