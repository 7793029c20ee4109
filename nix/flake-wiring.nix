# Evaluates flake.nix's outputs against nix/stub-nixpkgs (no network, no real nixpkgs) and returns what
# nix/check.sh asserts on. It checks the wiring only, not that nixpkgs accepts the expressions.
#   nix-instantiate --eval --strict --json nix/flake-wiring.nix
let
  flake = import ../flake.nix;
  nixpkgs = {
    outPath = ./stub-nixpkgs;
    lib = import ./stub-nixpkgs/lib.nix;
  };
  self = flake.outputs { inherit self nixpkgs; } // {
    outPath = ../.;
  };
  perSystem = system: {
    packages = builtins.mapAttrs (_: p: p.args) self.packages.${system};
    checks = builtins.mapAttrs (_: c: c.name or c.callPackage) self.checks.${system};
    resilienceVm = {
      inherit (self.checks.${system}.resilience-vm) name driverInteractive;
      nodes = builtins.attrNames self.checks.${system}.resilience-vm.nodes;
      # What the VM runs: the failpoints build of musicfs, and the probe.
      machine =
        let
          node = self.checks.${system}.resilience-vm.nodes.machine {
            pkgs = import ./stub-nixpkgs {
              inherit system;
              config.allowInsecurePredicate = pkg: pkg.pname == "minio";
            };
          };
        in
        {
          musicfs = node.services.musicfs.package.args;
          packages = map (p: p.args or p) node.environment.systemPackages;
          imports = map (m: baseNameOf (toString m)) node.imports;
        };
    };
    networkVm = {
      inherit (self.checks.${system}.network-vm) name driverInteractive;
      nodes = builtins.attrNames self.checks.${system}.network-vm.nodes;
      # The musicfs machine's settings (what does not need the real nixpkgs: not the snakeoil key).
      machine =
        let
          node = self.checks.${system}.network-vm.nodes.machine {
            pkgs = import ./stub-nixpkgs { inherit system; config.allowInsecurePredicate = pkg: pkg.pname == "minio"; };
            lib.mkForce = v: { _force = v; };
            nodes.proxy.networking.primaryIPAddress = "192.168.1.3";
          };
        in
        {
          inherit (node.services.musicfs) environmentFile settings;
          musicfs = node.services.musicfs.package.args;
          wantedBy = node.systemd.services.musicfs.wantedBy;
          extraHosts = node.networking.extraHosts;
          etc = builtins.mapAttrs (_: e: e.mode) node.environment.etc;
          etcOwners = builtins.mapAttrs (_: e: e.user or "root") node.environment.etc;
          packages = map (p: p.args or p) node.environment.systemPackages;
        };
    };
    # `nix build .#checks.resilience-vm` resolves here (legacyPackages.<system>.checks.resilience-vm).
    cardPath = self.legacyPackages.${system}.checks.resilience-vm.name;
    devShell = self.devShells.${system}.default.packages;
    formatter = self.formatter.${system};
  };
in
{
  description = flake.description;
  inputs = flake.inputs;
  x86_64-linux = perSystem "x86_64-linux";
  aarch64-linux = perSystem "aarch64-linux";
  overlay = builtins.attrNames (self.overlays.default { } { });
  nixosModules = builtins.mapAttrs (_: m: baseNameOf (toString m)) self.nixosModules;
  systems = builtins.attrNames self.packages;
}
