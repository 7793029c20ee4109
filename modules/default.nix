# All NixOS modules of this repository; today that is `services.musicfs` (./musicfs.nix).
# The flake exports ./musicfs.nix itself as `nixosModules.default`; this file is for non-flake users:
#   imports = [ /path/to/musicfs/modules ];
{
  imports = [ ./musicfs.nix ];
}
