#!/usr/bin/env bash
# What can be checked without nixpkgs (no network here to fetch it):
# 1. every Nix file parses (nix-instantiate --parse);
# 2. the NixOS module, evaluated against a stub lib (nix/unit-parity.nix), renders the same unit settings
#    as dist/musicfs.service, and its options change the unit as documented;
# 3. the flake's outputs, evaluated against a stub nixpkgs (nix/flake-wiring.nix), are wired as intended;
# 4. the VM tests' Python scripts (resilience.nix, network.nix) have no undefined names or unused imports
#    (pyflakes) and type-check (mypy) against a typed stub of the driver (nix/test-driver/), as the NixOS
#    driver checks them before running;
# 5. if ffmpeg is installed: the sample library's build script runs, tags its files, is deterministic,
#    has no two files alike and is larger than the VM's 32 MiB cache filesystem.
# 6. if systemd-analyze is installed: the unit, rendered as NixOS would, passes `systemd-analyze verify`.
# Needs `nix-instantiate` (Debian: apt-get install nix-bin) and python3.
#   bash nix/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== nix-instantiate --parse"
files=(flake.nix modules/*.nix nixos-tests/*.nix nix/*.nix nix/stub-nixpkgs/*.nix)
for f in "${files[@]}"; do
  nix-instantiate --parse "$f" >/dev/null
  echo "ok  $f"
done

echo "== unit parity: modules/musicfs.nix vs dist/musicfs.service"
eval_module() { nix-instantiate --eval --strict --json -E "import ./nix/unit-parity.nix { $1 }"; }
eval_module "" >/tmp/musicfs-unit-parity.json
eval_module 'failpoints = "daemon::watchdog::selfcheck_stall=return"; environmentFile = "/run/secrets/musicfs.env"; watchdogSec = 0; settings = { origins = [ ]; cache_dir = "/srv/cache"; };' \
  >/tmp/musicfs-unit-variant.json
python3 - dist/musicfs.service /tmp/musicfs-unit-parity.json /tmp/musicfs-unit-variant.json <<'PY'
import json, re, sys

dist_path, parity_path, variant_path = sys.argv[1:]
store = "/nix/store/00000000000000000000000000000000-"
to_store = {
    "/usr/local/bin/musicfs": store + "musicfs/bin/musicfs",
    "/usr/bin/fusermount3": store + "fuse3/bin/fusermount3",
    "/bin/kill": store + "coreutils/bin/kill",
    "${MUSICFS_CONFIG}": "/etc/musicfs/musicfs.toml",
    "${MUSICFS_MOUNT_POINT}": "/mnt/music",
}

sections, section = {}, None
for line in open(dist_path):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    if m := re.fullmatch(r"\[(\w+)\]", line):
        section = sections.setdefault(m.group(1), {})
        continue
    key, value = line.split("=", 1)
    for old, new in to_store.items():
        value = value.replace(old, new)
    section.setdefault(key, []).append(value)

out = json.load(open(parity_path))
unit = out["unit"]

def norm(v):
    if isinstance(v, list):
        return [norm(x) for x in v]
    if v is True:
        return "yes"
    if v is False:
        return "no"
    return str(v)

problems = []
service = unit["serviceConfig"]
for key, values in sections["Service"].items():
    if key == "Environment":
        env = dict(v.split("=", 1) for v in values)
        if env != unit["environment"]:
            problems.append(f"Environment: dist {env} != module {unit['environment']}")
        continue
    module_values = norm(service[key]) if key in service else None
    if module_values is None:
        problems.append(f"{key}: in dist, missing from the module")
    elif (module_values if isinstance(module_values, list) else [module_values]) != values:
        problems.append(f"{key}: dist {values} != module {module_values!r}")
extra = set(service) - set(sections["Service"])
if extra:
    problems.append(f"module sets keys dist does not: {sorted(extra)}")
expect_unit = {
    "Description": [unit["description"]],
    "Documentation": unit["documentation"],
    "Wants": [" ".join(unit["wants"])],
    "After": [" ".join(unit["after"])],
    "OnFailure": [" ".join(unit.get("onFailure", []))],
}
for key, values in sections["Unit"].items():
    if expect_unit.get(key) != values:
        problems.append(f"[Unit] {key}: dist {values} != module {expect_unit.get(key)}")
if sections["Install"]["WantedBy"] != unit["wantedBy"]:
    problems.append(f"[Install] WantedBy: dist {sections['Install']['WantedBy']} != module {unit['wantedBy']}")
# The unit musicfs.service's OnFailure= starts (2.11), setting for setting.
unmount = out["unmountUnit"]
dist_unmount = {}
for line in open(dist_path.replace("musicfs.service", "musicfs-unmount.service")):
    line = line.strip()
    if line and not line.startswith("#") and not line.startswith("[") and "=" in line:
        key, value = line.split("=", 1)
        for old, new in to_store.items():
            value = value.replace(old, new)
        dist_unmount[key] = value
module_unmount = {
    "Description": unmount["description"],
    "Documentation": " ".join(unmount["documentation"]),
    "Environment": " ".join(f"{k}={v}" for k, v in unmount["environment"].items()),
    "Type": unmount["serviceConfig"]["Type"],
    "ExecStart": unmount["serviceConfig"]["ExecStart"],
}
if dist_unmount != module_unmount:
    problems.append(f"musicfs-unmount.service: dist {dist_unmount} != module {module_unmount}")
# The privilege split (issue 16): the daemon holds nothing to mount with; the root steps are the "+" ones.
if service.get("CapabilityBoundingSet") != "" or "@mount" in " ".join(norm(service.get("SystemCallFilter", []))):
    problems.append("the daemon may mount: CapabilityBoundingSet must be empty and SystemCallFilter without @mount")
if service.get("User") != "musicfs" or out["users"]["users"]["musicfs"].get("isSystemUser") is not True:
    problems.append(f"User=musicfs and a system user musicfs: {service.get('User')} {out['users']}")
if not service["ExecStartPre"].startswith("+") or "mount-helper" not in service["ExecStartPre"]:
    problems.append(f"ExecStartPre must run the mount helper as root (+): {service['ExecStartPre']}")
if "userAllowOther" in out["programs"].get("fuse", {}) or out["boot"] != {"kernelModules": ["fuse"]}:
    problems.append(f"programs/boot: root mounts, so no user_allow_other: {out['programs']} {out['boot']}")

# The options that change the unit.
v = json.load(open(variant_path))
vs, venv = v["unit"]["serviceConfig"], v["unit"]["environment"]
checks = {
    "failpoints -> FAILPOINTS": venv.get("FAILPOINTS") == "daemon::watchdog::selfcheck_stall=return",
    "environmentFile -> EnvironmentFile": vs.get("EnvironmentFile") == "/run/secrets/musicfs.env",
    "watchdogSec = 0 -> WatchdogSec=0s": vs.get("WatchdogSec") == "0s",
    "cache_dir outside /var/cache -> no CacheDirectory": "CacheDirectory" not in vs,
    "cache_dir outside /var/cache -> ReadWritePaths": vs.get("ReadWritePaths") == ["/srv/cache"],
    "cache_dir outside /var/cache -> owned by musicfs": v["tmpfiles"] == ["d /srv/cache 0700 musicfs musicfs - -"],
    "cache_dir -> RequiresMountsFor": v["unit"]["unitConfig"]["RequiresMountsFor"] == ["/srv/cache"],
    "no origins -> failing assertion": v["assertions"][0]["assertion"] is False,
    "failpoints -> a warning": len(v["warnings"]) == 1,
}
problems += [f"variant: {name}" for name, ok in checks.items() if not ok]

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"ok  {len(sections['Service'])} [Service] keys, [Unit] and [Install] match; {len(checks)} option variants behave")
PY

echo "== flake wiring (stub nixpkgs)"
nix-instantiate --eval --strict --json nix/flake-wiring.nix >/tmp/musicfs-flake-wiring.json
python3 - /tmp/musicfs-flake-wiring.json <<'PY'
import json, sys

w = json.load(open(sys.argv[1]))
assert w["systems"] == ["aarch64-linux", "x86_64-linux"], w["systems"]
assert w["overlay"] == ["musicfs", "musicfs-failpoints", "musicfs-probe"], w["overlay"]
assert w["nixosModules"]["default"] == "musicfs.nix"
assert w["inputs"]["nixpkgs"]["url"] == "github:NixOS/nixpkgs/nixos-unstable"
for system in w["systems"]:
    s = w[system]
    assert s["packages"] == {"default": {}, "musicfs": {}, "musicfs-failpoints": {"withFailpoints": True},
                             "musicfs-probe": {"cargoPackage": "musicfs-probe"}}, s["packages"]
    assert set(s["checks"]) == {"resilience-vm", "network-vm", "cargo-tests"}, s["checks"]
    net = s["networkVm"]
    assert net["name"] == "vm-test-run-musicfs-network" and net["driverInteractive"], net
    assert net["nodes"] == ["machine", "minio", "proxy", "sftp"], net
    nm = net["machine"]
    assert nm["musicfs"] == {"withFailpoints": True} and {"cargoPackage": "musicfs-probe"} in nm["packages"], nm
    assert nm["wantedBy"] == {"_force": []}, "the script starts musicfs once the servers are ready"
    assert nm["environmentFile"] == "/etc/musicfs/s3.env" and nm["etc"]["musicfs/s3.env"] == "0600", nm
    assert nm["etc"]["musicfs/id_ed25519"] == "0600", nm
    assert nm["etcOwners"]["musicfs/id_ed25519"] == "musicfs", "the unprivileged daemon reads its SFTP key"
    assert nm["extraHosts"] == "192.168.1.3 s3.musicfs.test", nm["extraHosts"]
    origins = {o["id"]: o for o in nm["settings"]["origins"]}
    assert list(origins) == ["disk", "bucket", "bucket-copy", "nas"], list(origins)
    assert origins["bucket"]["endpoint"] == "http://s3.musicfs.test:20000", origins["bucket"]
    assert origins["bucket"]["secret_key_env"] == "MUSICFS_S3_SECRET", origins["bucket"]
    assert not any("secret" in k and k != "secret_key_env" for o in origins.values() for k in o), "a secret inline"
    assert "musicfs-test-secret" not in json.dumps(nm["settings"]), "the S3 secret in the world-readable config"
    assert origins["bucket-copy"]["backup_for"] == "bucket" and origins["bucket-copy"]["path"] == "/srv/s3/music"
    assert (origins["nas"]["host"], origins["nas"]["port"]) == ("proxy", 20001), origins["nas"]
    # The probe's constants (probes/src/scenarios/network.rs) match the config.
    assert nm["settings"]["fuse"]["read_timeout"] == "10s" and nm["settings"]["library"]["sync_interval"] == "10s"
    assert nm["settings"]["health"]["interval"] == "2s"
    assert s["cardPath"] == s["checks"]["resilience-vm"], "legacyPackages.<system>.checks.resilience-vm"
    vm = s["resilienceVm"]
    assert vm["driverInteractive"] and vm["nodes"] == ["machine"], vm
    assert vm["machine"]["musicfs"] == {"withFailpoints": True}, vm["machine"]
    assert {"cargoPackage": "musicfs-probe"} in vm["machine"]["packages"], vm["machine"]
    assert vm["machine"]["imports"] == ["musicfs.nix"], vm["machine"]
    for tool in ["rustc", "cargo", "cargo-nextest", "rust-analyzer", "clippy", "rustfmt", "fuse3", "mpv", "vlc",
                 "ffmpeg", "openssh", "bindfs", "pkg-config"]:
        assert tool in s["devShell"], tool
    assert s["formatter"] == "nixfmt"
print("ok  packages, overlay, module, checks, legacyPackages alias, VM nodes, dev shell, formatter")
PY

stub_eval() { nix-instantiate --eval --strict --json -E "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin))'; }

echo "== VM test scripts (pyflakes, mypy)"
python3 -c 'import pyflakes, mypy' 2>/dev/null || {
  echo "pyflakes and mypy are needed here, as the NixOS driver runs both: python3 -m pip install pyflakes mypy" >&2
  exit 1
}
# check_script TEST NODES: extracts nixos-tests/TEST.nix's testScript (against a stub pkgs: the script must
# not force anything of nixpkgs), then lints it as the NixOS driver does, with the driver's builtins and one
# global per node, and type-checks it with mypy, each node declared a Machine as the driver declares them,
# against a typed stub of the driver's API (nix/test-driver/).
check_script() {
  local test=$1 nodes=$2 script=/tmp/musicfs-testscript-$1.py
  stub_eval "let pkgs = { testers.runNixOSTest = t: t; callPackage = _: _: \"/nix/store/sample-library\"; };
    in (import ./nixos-tests/$test.nix { inherit pkgs; musicfs = \"musicfs\"; musicfs-probe = \"probe\"; }).testScript" \
    >"$script"
  PYFLAKES_BUILTINS="subtest,start_all,$nodes" python3 -m pyflakes "$script"
  echo "ok  $script (pyflakes)"
  {
    echo "from nixos_test_driver_stub import Machine, start_all, subtest"
    for node in ${nodes//,/ }; do echo "$node: Machine"; done
    cat "$script"
  } >"${script%.py}-typed.py"
  MYPYPATH=nix/test-driver python3 -m mypy --no-implicit-optional --pretty --no-color-output \
    --cache-dir /tmp/musicfs-mypy-cache "${script%.py}-typed.py"
  echo "ok  $script (mypy)"
}
check_script resilience machine
check_script network machine,minio,proxy,sftp

echo "== sample library script (ffmpeg)"
if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
  stub_eval 'import ./nixos-tests/sample-library.nix { runCommand = _: _: script: script; ffmpeg-headless = null; }' \
    >/tmp/musicfs-sample-library.sh
  rm -rf /tmp/musicfs-sample-a /tmp/musicfs-sample-b
  out=/tmp/musicfs-sample-a bash -euo pipefail /tmp/musicfs-sample-library.sh >/dev/null
  out=/tmp/musicfs-sample-b bash -euo pipefail /tmp/musicfs-sample-library.sh >/dev/null
  diff <(cd /tmp/musicfs-sample-a && sha256sum ./*) <(cd /tmp/musicfs-sample-b && sha256sum ./*) >/dev/null ||
    { echo "sample library is not deterministic"; exit 1; }
  for f in /tmp/musicfs-sample-a/*; do
    tags=$(ffprobe -v error -show_entries format_tags=artist,album,title,track:stream_tags=artist,album,title,track \
      -of default=noprint_wrappers=1 "$f")
    for key in artist album title track; do
      grep -qi "^TAG:$key=." <<<"$tags" || { echo "$f: no $key tag"; exit 1; }
    done
  done
  # musicfs-probe matches files by content hash, and its disk-full scenario needs a library larger than
  # the VM's 32 MiB cache filesystem.
  [ "$(sha256sum /tmp/musicfs-sample-a/* | cut -d' ' -f1 | sort -u | wc -l)" = "$(ls /tmp/musicfs-sample-a | wc -l)" ] ||
    { echo "two sample files have the same content"; exit 1; }
  bytes=$(cat /tmp/musicfs-sample-a/* | wc -c)
  [ "$bytes" -gt $((32 << 20)) ] || { echo "sample library ($bytes B) is not larger than 32 MiB"; exit 1; }
  echo "ok  $(ls /tmp/musicfs-sample-a | wc -l) files, $bytes bytes (> 32 MiB), distinct, tagged, deterministic"
  rm -rf /tmp/musicfs-sample-a /tmp/musicfs-sample-b
else
  echo "skipped: ffmpeg/ffprobe not installed"
fi

echo "== the module's unit, rendered as NixOS would, through systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
  python3 - /tmp/musicfs-unit-parity.json /tmp/musicfs-module.service <<'PY'
import json, sys

unit = json.load(open(sys.argv[1]))["unit"]
store = "/nix/store/00000000000000000000000000000000-"
# Executables that exist on this machine, so that verify checks the directives and not the store.
real = {store + "musicfs/bin/musicfs": "/usr/bin/true", store + "fuse3/bin/fusermount3": "/usr/bin/true",
        store + "coreutils/bin/kill": "/usr/bin/kill"}

def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    v = str(v)
    for old, new in real.items():
        v = v.replace(old, new)
    return v

lines = ["[Unit]", f"Description={unit['description']}", "Documentation=" + " ".join(unit["documentation"]),
         "Wants=" + " ".join(unit["wants"]), "After=" + " ".join(unit["after"])]
lines += [f"{k}={x}" for k, v in unit["unitConfig"].items() for x in (v if isinstance(v, list) else [v])]
lines += ["[Service]"] + [f'Environment="{k}={v}"' for k, v in unit["environment"].items()]
lines += [f"{k}={value(x)}" for k, v in unit["serviceConfig"].items() for x in (v if isinstance(v, list) else [v])]
lines += ["[Install]", "WantedBy=" + " ".join(unit["wantedBy"])]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
PY
  # Any complaint is a failure: systemd ignores a directive it cannot parse and starts the unit anyway.
  complaints=$(systemd-analyze verify /tmp/musicfs-module.service 2>&1) || { echo "$complaints"; exit 1; }
  [ -z "$complaints" ] || { echo "$complaints"; exit 1; }
  echo "ok  systemd-analyze verify (systemd $(systemctl --version | head -1 | cut -d' ' -f2))"
  # Issue 16: the sandbox's exposure, as systemd scores it; the live unit is scored again in the nspawn
  # runner (security scenario).
  for unit in /tmp/musicfs-module.service dist/musicfs.service; do
    cp "$unit" /tmp/musicfs-exposure.service
    score=$(systemd-analyze security --offline=true --no-pager /tmp/musicfs-exposure.service 2>/dev/null |
      sed -n 's/.*Overall exposure level for musicfs-exposure.service: \([0-9.]*\).*/\1/p')
    python3 -c "import sys; s = float('${score:-99}'); sys.exit(0 if s <= 2.0 else 1)" ||
      { echo "$unit: exposure ${score:-unknown} is above 2.0"; exit 1; }
    echo "ok  $unit: exposure $score (at most 2.0)"
  done
else
  echo "skipped: systemd-analyze not installed"
fi
