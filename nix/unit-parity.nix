# Evaluates modules/musicfs.nix WITHOUT nixpkgs, against a tiny stub of `lib` and `pkgs`, and returns the
# `systemd.services.musicfs` it defines (mkIf resolved) plus the generated config's settings, so that
# nix/check.sh can compare the unit with dist/musicfs.service. Only the module's `config` function is
# exercised: option declarations are stubbed away, so types and defaults are NOT checked here (the
# defaults below are copied by hand from the module).
#   nix-instantiate --eval --strict --json -E "import ./nix/unit-parity.nix { }"
{
  settings ? {
    origins = [
      {
        id = "nas";
        type = "local";
        path = "/srv/music";
      }
    ];
    fuse.allow_other = true;
  },
  environmentFile ? null,
  failpoints ? null,
  watchdogSec ? 30,
}:

let
  hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
  isIf = v: builtins.isAttrs v && (v._type or null) == "if";
  # Resolve lib.mkIf the way the module system does for attribute sets: a false condition drops the
  # attribute (or yields `{ }` at the top).
  resolve =
    v:
    if isIf v then
      (if v.condition then resolve v.content else null)
    else if builtins.isAttrs v then
      builtins.removeAttrs (builtins.mapAttrs (_: resolve) v) (
        builtins.filter (n: isIf v.${n} && !v.${n}.condition) (builtins.attrNames v)
      )
    else
      v;

  lib = {
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkOption = _: null;
    mkEnableOption = _: null;
    mkPackageOption = _: _: _: null;
    literalExpression = x: x;
    types = {
      strMatching = _: null;
      submodule = _: null;
      listOf = _: null;
      nullOr = _: null;
      str = null;
      bool = null;
      path = null;
      ints.unsigned = null;
    };
    getExe' = pkg: name: "${pkg}/bin/${name}";
    inherit hasPrefix;
    removePrefix = p: s: if hasPrefix p s then builtins.substring (builtins.stringLength p) (-1) s else s;
    optional = c: x: if c then [ x ] else [ ];
    optionalAttrs = c: x: if c then x else { };
  };

  pkgs = {
    formats.toml = _: {
      type = null;
      generate = name: _: "/nix/store/00000000000000000000000000000000-${name}";
    };
    fuse3 = "/nix/store/00000000000000000000000000000000-fuse3";
    coreutils = "/nix/store/00000000000000000000000000000000-coreutils";
  };

  cfg = {
    enable = true;
    package = "/nix/store/00000000000000000000000000000000-musicfs";
    settings = {
      mount_point = "/mnt/music";
      cache_dir = "/var/cache/musicfs";
    }
    // settings
    // {
      fuse = {
        allow_other = false;
      }
      // (settings.fuse or { });
    };
    inherit environmentFile failpoints watchdogSec;
  };

  module = import ../modules/musicfs.nix {
    inherit lib pkgs;
    config.services.musicfs = cfg;
  };
  out = resolve module.config;
in
{
  inherit (out)
    assertions
    warnings
    boot
    users
    ;
  programs = out.programs or { };
  tmpfiles = out.systemd.tmpfiles.rules;
  unit = out.systemd.services.musicfs;
  unmountUnit = out.systemd.services.musicfs-unmount;
  configFile = out.environment.etc."musicfs/musicfs.toml".source;
  inherit (cfg) settings;
}
