# The two lib functions flake.nix calls at its top level, for nix/stub-nixpkgs (see there).
{
  genAttrs =
    names: f:
    builtins.listToAttrs (
      map (name: {
        inherit name;
        value = f name;
      }) names
    );
  getName = drv: drv.pname or (builtins.parseDrvName drv.name).name;
}
