"""Side-by-side speed and peak memory: SynTheory's render pipeline vs `baton dataset`.

SynTheory (brown-palm/syntheory) renders each clip by writing a MIDI file with mido, then running
its `midi2audio` binary (rustysynth + hound, 44.1 kHz stereo float WAV) as a subprocess. This script
does exactly that for the first N clips of the notes or chords concept (same MIDI content as
SynTheory's generators: channel 2, velocity 64, 4 plays x 2 beats at 120 BPM), and times
`baton dataset CONCEPT --limit N` on the same machine in the same run.

Usage (from the repository root; see tests/reference/requirements.txt for mido):
  python tests/reference/syntheory_bench.py --baton target/release/baton \
      --midi2audio tests/reference/work/midi2audio/target/release/midi2audio \
      --soundfont /usr/share/sounds/sf2/TimGM6mb.sf2 --concept notes --n 368
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

# SynTheory's 92 programs: no synth effects (96-103), no 112-127, minus 12 ambiguous ones.
DROPPED = {8, 9, 14, 21, 22, 23, 31, 47, 55, 77, 78, 86}
PROGRAMS = [p for p in range(112) if not 96 <= p < 104 and p not in DROPPED]


def triad(root_pc, quality):
    """SynTheory's root-position triads (tonic within a tritone of middle C)."""

    def tonic(pc):
        return 60 + pc if pc <= 5 else 60 - (12 - pc)

    if quality == "aug":
        t = tonic((root_pc - 3) % 12)
        return [t + 3, t + 7, t + 11]
    third, fifth = {"major": (4, 7), "minor": (3, 7), "dim": (3, 6)}[quality]
    t = tonic(root_pc)
    return [t, t + third, t + fifth]


def clips(concept, n):
    """The first n (name, program, [chord per play]) in SynTheory's enumeration order."""
    out = []
    if concept == "notes":
        for midi in range(108):
            for p in PROGRAMS:
                out.append((f"{midi}_{p}", p, [[midi]] * 4))
    else:
        for root in range(12):
            for q in ["major", "minor", "aug", "dim"]:
                for p in PROGRAMS:
                    out.append((f"{root}_{q}_{p}", p, [triad(root, q)] * 4))
    return out[:n]


def render_one(job):
    """SynTheory's way: one MIDI file and one midi2audio process per clip."""
    from mido import Message, MetaMessage, MidiFile, MidiTrack, bpm2tempo

    (name, program, plays), midi2audio, soundfont, out_dir = job
    mid = MidiFile(ticks_per_beat=480)
    track = MidiTrack()
    track.append(MetaMessage("track_name", name="x", time=0))
    track.append(MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    track.append(MetaMessage("set_tempo", tempo=bpm2tempo(120), time=0))
    track.append(Message("program_change", program=program, time=0, channel=2))
    for keys in plays:
        for k in keys:
            track.append(Message("note_on", note=k, velocity=64, time=0, channel=2))
        for i, k in enumerate(keys):
            track.append(
                Message("note_off", note=k, velocity=64, time=960 if i == 0 else 0, channel=2)
            )
    mid.tracks.append(track)
    mid_path = os.path.join(out_dir, name + ".mid")
    mid.save(mid_path)
    subprocess.run(
        [midi2audio, soundfont, mid_path, os.path.join(out_dir, name + ".wav")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def render_syntheory(concept, n, midi2audio, soundfont, out_dir):
    """All clips over a process pool, one worker per core (SynTheory's DatasetWriter uses up to 8
    processes)."""
    from multiprocessing import Pool

    jobs = [(c, midi2audio, soundfont, out_dir) for c in clips(concept, n)]
    with Pool(os.cpu_count()) as pool:
        pool.map(render_one, jobs, chunksize=4)


def timed(cmd, env=None):
    """Runs cmd under GNU time; returns (wall seconds, peak RSS in MB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as f:
        subprocess.run(
            ["/usr/bin/time", "-o", f.name, "-f", "%e %M"] + cmd, check=True, env=env
        )
        wall, rss_kb = f.read().split()[-2:]
    return float(wall), int(rss_kb) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baton", required=True)
    ap.add_argument("--midi2audio", required=True)
    ap.add_argument("--soundfont", required=True)
    ap.add_argument("--concept", choices=["notes", "chords"], default="notes")
    ap.add_argument("--n", type=int, default=368)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        render_syntheory(a.concept, a.n, a.midi2audio, a.soundfont, a.out)
        return

    work = tempfile.mkdtemp(prefix="baton-bench-")
    try:
        b_out = os.path.join(work, "baton")
        env = dict(os.environ, BATON_SOUNDFONT=a.soundfont)
        b_wall, b_rss = timed(
            [a.baton, "dataset", a.concept, "--out", b_out, "--limit", str(a.n), "--quiet"], env
        )
        b44_wall, b44_rss = timed(
            [a.baton, "dataset", a.concept, "--out", b_out + "44", "--limit", str(a.n),
             "--sample-rate", "44100", "--quiet"], env
        )
        s_out = os.path.join(work, "syntheory")
        os.makedirs(s_out)
        s_wall, s_rss = timed(
            [sys.executable, __file__, "--inner", "--out", s_out, "--concept", a.concept,
             "--n", str(a.n), "--baton", a.baton, "--midi2audio", a.midi2audio,
             "--soundfont", a.soundfont]
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    audio_s = 4.0 * a.n
    print(f"{a.concept}, {a.n} clips of 4 s, {os.cpu_count()} cores")
    print(f"{'pipeline':<44} {'wall s':>8} {'clips/s':>8} {'x real time':>12} {'peak MB':>8}")
    for name, wall, rss in [
        ("baton dataset (in-process, 32 kHz mono)", b_wall, b_rss),
        ("baton dataset --sample-rate 44100", b44_wall, b44_rss),
        ("SynTheory (mido + midi2audio, 44.1k stereo)", s_wall, s_rss),
    ]:
        print(f"{name:<44} {wall:8.1f} {a.n / wall:8.1f} {audio_s / wall:12.1f} {rss:8.1f}")


if __name__ == "__main__":
    main()
