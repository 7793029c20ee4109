# A small, real, tagged music library for the VM tests, encoded at build time (deterministic: seeded
# noise, bit-exact muxing; every file has different content, as the probe matches files by hash). The
# origin layout is flat (rip-NN.ext) on purpose: MusicFS must show it by its tags, as
# Artist/Album/NN - Title.ext. About 48 MB: 18 short FLAC/Opus tracks and five 60 s FLAC tracks of white
# noise (each larger than one 4 MiB chunk). The library must be larger than the VM's 32 MiB cache
# filesystem: musicfs-probe's disk-full scenario refuses to run otherwise.
{ runCommand, ffmpeg-headless }:

runCommand "musicfs-sample-library" { nativeBuildInputs = [ ffmpeg-headless ]; } ''
  mkdir -p "$out"
  encode() { # encode FILE LAVFI-SOURCE OUTPUT-ARGS...
    local file=$1 source=$2
    shift 2
    ffmpeg -nostdin -hide_banner -loglevel error -f lavfi -i "$source" \
      -ac 2 -fflags +bitexact -flags +bitexact "$@" "$out/$file"
  }
  n=0
  for artist in "Ada Quartet" "The Probes" "Mötley Signal"; do
    for album in "First Light" "Second Wind"; do
      for track in 1 2 3; do
        n=$((n + 1))
        tags=(-metadata "artist=$artist" -metadata "album=$album" -metadata "title=Song $track"
              -metadata "track=$track" -metadata "date=2026")
        if [ $((n % 3)) -eq 0 ]; then
          encode "$(printf 'rip-%02d.opus' "$n")" "anoisesrc=d=6:c=pink:r=48000:a=0.5:s=$n" \
            -c:a libopus -b:a 64k "''${tags[@]}"
        else
          encode "$(printf 'rip-%02d.flac' "$n")" "anoisesrc=d=6:c=pink:r=44100:a=0.5:s=$n" \
            -c:a flac "''${tags[@]}"
        fi
      done
    done
  done
  for track in 1 2 3 4 5; do
    encode "rip-long-$track.flac" "anoisesrc=d=60:c=white:r=44100:a=1:s=$((100 + track))" -c:a flac \
      -metadata "artist=The Probes" -metadata "album=Long Player" -metadata "title=Sixty Seconds $track" \
      -metadata "track=$track"
  done
  ls -l "$out"
''
