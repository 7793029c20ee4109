# A stand-in for nixpkgs, used only by nix/check.sh to evaluate the flake's wiring offline: which outputs
# exist, what the overlay passes to nix/package.nix, that the VM test and its aliases resolve. Packages are
# plain strings and callPackage just records its arguments: nothing here says nixpkgs itself would accept
# these expressions.
{
  system,
  overlays ? [ ],
  config ? { },
}:

assert config.allowInsecurePredicate {
  pname = "minio";
  name = "minio-2025-01-01";
};
assert !config.allowInsecurePredicate {
  pname = "openssl";
  name = "openssl-1.1.1w";
};

let
  lib = import ./lib.nix;
  base = {
    inherit lib;
    stdenv.hostPlatform.system = system;
    callPackage = f: args: {
      callPackage = baseNameOf (toString f);
      inherit args;
    };
    testers.runNixOSTest =
      test:
      test
      // {
        type = "derivation";
        name = "vm-test-run-${test.name}";
        driverInteractive = "nixos-test-driver-${test.name}";
      };
    mkShell = attrs: attrs // { type = "derivation"; };
    rustPlatform.rustLibSrc = "rust-lib-src";
  };
  names = [
    "rustc"
    "cargo"
    "cargo-nextest"
    "rust-analyzer"
    "clippy"
    "rustfmt"
    "pkg-config"
    "cmake"
    "fuse3"
    "mpv"
    "vlc"
    "ffmpeg"
    "openssh"
    "bindfs"
    "toxiproxy"
    "curl"
    "minio-client"
    "openssl"
    "nixfmt"
  ];
  withNames = base // lib.genAttrs names (name: name);
  final = builtins.foldl' (prev: overlay: prev // overlay final prev) withNames overlays;
in
final
