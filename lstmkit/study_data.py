"""JSB-Chorales-style piano rolls from the Bach chorales in music21's corpus.

Boulanger-Lewandowski, Bengio & Vincent (2012) published "JSB Chorales": 382
four-part Bach chorales, sampled at every quarter note, each time step a set
of sounding pitches among the 88 keys of a piano (MIDI 21–108), split 229 /
76 / 77 into train / validation / test. Greff et al. (2015) used it as their
third task. Their pickled file is not redistributable from here and needs
the network, so this module rebuilds the same kind of data offline from the
chorales music21 ships (``music21.corpus``):

* every ``.mxl``/``.xml`` score under ``corpus/bach`` with exactly four parts
  (soprano, alto, tenor, bass); scores whose rolls come out identical to an
  earlier one (the same harmonisation filed twice) are kept once;
* the roll has one row per quarter note from offset 0 to the end: row ``t``
  marks the pitches sounding at the instant ``t`` (a note with offset ≤ t <
  offset + duration), so a passing eighth note between beats is not seen, as
  in Boulanger-Lewandowski's quarter-note sampling;
* the split: chorales sorted by file name, shuffled with a fixed seed, then
  cut in the proportions 229 : 76 : 77 (a documented stand-in for their split,
  whose chorale list is not in music21).

Parsing ~400 scores takes a minute or two, so the result is cached as an
``.npz`` (plain arrays; loading never unpickles) in
``$LSTMKIT_CACHE_DIR/music`` (else ``~/.cache/lstmkit/music``), keyed by the
music21 version: a new music21 (a changed corpus) builds a new file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["LOWEST_PITCH", "NUM_PITCHES", "SPLIT_PROPORTIONS", "piano_roll", "chorale_paths",
           "build_chorales", "load_chorales", "music_cache_dir", "next_step_data"]

LOWEST_PITCH = 21          # A0, the piano's lowest key
NUM_PITCHES = 88           # A0 … C8
SPLIT_PROPORTIONS = {"train": 229, "valid": 76, "test": 77}   # Boulanger-Lewandowski et al. 2012
SPLIT_SEED = 2012
CACHE_FORMAT = 1           # bump when the roll construction changes


def music_cache_dir() -> Path:
    """$LSTMKIT_CACHE_DIR/music, else ~/.cache/lstmkit/music (XDG_CACHE_HOME respected)."""
    root = os.environ.get("LSTMKIT_CACHE_DIR")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lstmkit"
    return base / "music"


def piano_roll(score) -> np.ndarray:
    """A music21 score → bool [steps, 88]: the pitches sounding at each quarter-note instant."""
    flat = score.flatten()
    steps = int(np.ceil(float(score.highestTime)))
    roll = np.zeros((steps, NUM_PITCHES), dtype=bool)
    for element in flat.notes:            # notes and chords; rests carry no pitch
        start = float(element.offset)
        end = start + float(element.duration.quarterLength)
        first, last = int(np.ceil(start)), int(np.ceil(end))   # instants t with start <= t < end
        for pitch in element.pitches:
            key = int(pitch.midi) - LOWEST_PITCH
            if 0 <= key < NUM_PITCHES and first < last:
                roll[first:min(last, steps), key] = True
    return roll


def chorale_paths():
    """The four-part candidates: every MusicXML file under music21's corpus/bach, sorted by name."""
    from music21 import corpus

    return sorted((p for p in corpus.getComposer("bach") if p.suffix in (".mxl", ".xml")),
                  key=lambda p: p.name)


def _split_names(count, seed=SPLIT_SEED):
    """'train'/'valid'/'test' for ``count`` chorales in the 229 : 76 : 77 proportions."""
    total = sum(SPLIT_PROPORTIONS.values())
    n_train = round(count * SPLIT_PROPORTIONS["train"] / total)
    n_valid = round(count * SPLIT_PROPORTIONS["valid"] / total)
    labels = np.array(["train"] * n_train + ["valid"] * n_valid + ["test"] * (count - n_train - n_valid))
    return labels[np.argsort(np.random.default_rng(seed).permutation(count))]


def build_chorales(paths=None, progress=False):
    """Parse the chorales and return the arrays the cache stores (see :func:`load_chorales`)."""
    from music21 import corpus

    paths = chorale_paths() if paths is None else list(paths)
    rolls, names, seen = [], [], set()
    iterator = paths
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="parsing chorales", leave=False)
    for path in iterator:
        score = corpus.parse(str(path))
        if len(score.parts) != 4:
            continue
        roll = piano_roll(score)
        key = roll.tobytes() + bytes(str(roll.shape), "ascii")
        if roll.shape[0] < 2 or key in seen:
            continue
        seen.add(key)
        rolls.append(roll)
        names.append(Path(path).stem)
    lengths = np.array([len(r) for r in rolls], dtype=np.int64)
    return {"rolls": np.concatenate(rolls).astype(np.uint8), "lengths": lengths,
            "names": np.array(names), "split": _split_names(len(rolls))}


def load_chorales(cache_dir=None, progress=False):
    """{'train'|'valid'|'test': list of bool [steps, 88] rolls}, plus 'names': {split: [file stems]}.

    Built from music21's corpus on first use and cached (see the module docstring).
    """
    import music21

    directory = Path(cache_dir) if cache_dir is not None else music_cache_dir()
    path = directory / f"jsb_chorales_music21-{music21.__version__}_v{CACHE_FORMAT}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    else:
        arrays = build_chorales(progress=progress)
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(partial, **arrays)
        os.replace(partial, path)     # atomic: two workers building at once never see half a file
    rolls = np.split(arrays["rolls"].astype(bool), np.cumsum(arrays["lengths"])[:-1])
    result = {split: [r for r, s in zip(rolls, arrays["split"]) if s == split] for split in SPLIT_PROPORTIONS}
    result["names"] = {split: [str(n) for n, s in zip(arrays["names"], arrays["split"]) if s == split]
                       for split in SPLIT_PROPORTIONS}
    return result


def next_step_data(rolls, dtype=np.float32):
    """Rolls → a padded batch dict for next-step prediction: input roll[t], target roll[t+1].

    ``inputs``/``targets`` [B, T−1, 88] (zero past each chorale's end), ``lengths`` [B],
    ``mask`` [B, T−1] (True on real steps).
    """
    if not rolls:
        raise ValueError("next_step_data: expected at least one piano roll")
    for roll in rolls:
        if roll.ndim != 2 or roll.shape[1] != NUM_PITCHES or len(roll) < 2:
            raise ValueError(f"next_step_data: each roll must be [steps >= 2, {NUM_PITCHES}], got {roll.shape}")
    lengths = np.array([len(r) - 1 for r in rolls], dtype=np.int64)
    steps = int(lengths.max())
    inputs = np.zeros((len(rolls), steps, NUM_PITCHES), dtype=dtype)
    targets = np.zeros_like(inputs)
    for row, roll in enumerate(rolls):
        inputs[row, :len(roll) - 1] = roll[:-1]
        targets[row, :len(roll) - 1] = roll[1:]
    mask = np.arange(steps)[None, :] < lengths[:, None]
    return {"inputs": inputs, "targets": targets, "lengths": lengths, "mask": mask}
