# The Cargo workspace as a store path: everything in the repository except the Nix files, so editing
# flake.nix, modules/, nixos-tests/ or nix/ does not rebuild the Rust packages.
# `maybeMissing` keeps this working while a directory (probes/, target/) is absent.
{ lib }:

let
  fs = lib.fileset;
  root = ../.;
in
fs.toSource {
  inherit root;
  fileset = fs.difference root (
    fs.unions [
      (fs.maybeMissing ../flake.nix)
      (fs.maybeMissing ../flake.lock)
      (fs.maybeMissing ../modules)
      (fs.maybeMissing ../nixos-tests)
      (fs.maybeMissing ../nix)
      # Only present outside a flake evaluation (a flake's source is the git-tracked files).
      (fs.maybeMissing ../target)
      (fs.maybeMissing ../.git)
      (fs.maybeMissing ../result)
    ]
  );
}
