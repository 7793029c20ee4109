# checks.<system>.cargo-tests: the L1 in-process layer of the suite (docs/TESTING.md) inside the Nix
# build sandbox:
#   cargo nextest run --workspace --all-features -E 'not (binary(process) | binary(e2e) | binary(integration))'
#
# Sandbox limits, and why this is only L1:
# - no /dev/fuse and no mount rights: the L2 binaries `process` and `e2e` mount FUSE, so they are filtered
#   out (they run in CI on a real machine, and as systemd units in checks.resilience-vm);
# - no network: the L3 binary `integration` starts sshd, an S3 server and Toxiproxy; out as well (loopback
#   exists in the sandbox, but those servers are not worth packaging here);
# - what stays needs only files and loopback: unit tests, tests/resilience, tests/failpoints (hence
#   --all-features), tests/tidy, and the sample-library tests, which encode with ffmpeg and play with mpv.
# No requiredSystemFeatures: an ordinary sandboxed builder runs it (the VM test is the one that needs kvm).
{
  lib,
  rustPlatform,
  cargo,
  cargo-nextest,
  pkg-config,
  cmake,
  openssl,
  ffmpeg-headless,
  mpv,
}:

let
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "musicfs-cargo-tests";
  inherit (workspace.workspace.package) version;

  src = import ./source.nix { inherit lib; };
  cargoLock.lockFile = ../Cargo.lock;

  # Dev-dependencies need these: openssl-sys (reqwest's native-tls, via noxious-client) and aws-lc-sys
  # (rustls, via object_store), whose build script may fall back to CMake.
  nativeBuildInputs = [
    cargo
    cargo-nextest
    pkg-config
    cmake
  ];
  buildInputs = [ openssl ];
  nativeCheckInputs = [
    ffmpeg-headless
    mpv
  ];
  # CMake is a tool of a build script here, not the project's build system.
  dontUseCmakeConfigure = true;
  auditable = false;

  # nextest builds the test binaries itself; there is nothing to build or install beyond the report.
  dontCargoBuild = true;
  buildPhase = ''
    runHook preBuild
    runHook postBuild
  '';

  doCheck = true;
  checkPhase = ''
    runHook preCheck
    export HOME="$TMPDIR"
    cargo nextest run --offline --workspace --all-features --profile ci \
      --test-threads "$NIX_BUILD_CORES" \
      -E 'not (binary(process) | binary(e2e) | binary(integration))'
    runHook postCheck
  '';

  installPhase = ''
    runHook preInstall
    mkdir -p "$out"
    # The ci profile (.config/nextest.toml) writes a JUnit report.
    if [ -f target/nextest/ci/junit.xml ]; then cp target/nextest/ci/junit.xml "$out/"; fi
    echo "cargo nextest (L1) passed" > "$out/result"
    runHook postInstall
  '';

  meta = {
    description = "MusicFS L1 (in-process) test suite, run with cargo-nextest";
    platforms = lib.platforms.linux;
  };
}
