"""lstmkit.study: the Bernoulli output, the chorale rolls, the Optuna/Dask driver, the analysis.

The study is an extra (optuna, dask[distributed], music21): without it these tests skip.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("distributed")
music21 = pytest.importorskip("music21")

from lstmkit import study, study_data  # noqa: E402


# -- the Bernoulli output: forward and backward ----------------------------------------------------
def _bernoulli_case(rng, dtype=np.float64):
    logits = rng.normal(0, 3, (3, 5, 7)).astype(dtype)
    targets = (rng.random((3, 5, 7)) < 0.3).astype(dtype)
    mask = np.arange(5)[None, :] < np.array([5, 3, 1])[:, None]
    return logits, targets, mask


def test_bernoulli_nll_matches_its_definition_and_torch():
    logits, targets, mask = _bernoulli_case(np.random.default_rng(0))
    value = study.BernoulliNLL()(logits, targets, mask)
    p = 1 / (1 + np.exp(-logits))
    per_step = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(-1)   # summed over pitches
    assert value == pytest.approx(per_step[mask].mean(), rel=1e-12)               # mean over real steps
    torch = pytest.importorskip("torch")
    reference = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(logits), torch.tensor(targets), reduction="none").sum(-1)[torch.tensor(mask)].mean()
    assert value == pytest.approx(float(reference), rel=1e-12)


def test_bernoulli_nll_gradient_matches_finite_differences():
    logits, targets, mask = _bernoulli_case(np.random.default_rng(1))
    loss = study.BernoulliNLL()
    loss(logits, targets, mask)
    analytic = loss.backward()
    numeric = np.zeros_like(logits)
    eps = 1e-6
    for index in np.ndindex(logits.shape):
        shifted = logits.copy()
        shifted[index] += eps
        up = study.BernoulliNLL()(shifted, targets, mask)
        shifted[index] -= 2 * eps
        down = study.BernoulliNLL()(shifted, targets, mask)
        numeric[index] = (up - down) / (2 * eps)
    assert np.abs(analytic - numeric).max() < 1e-8
    assert np.all(analytic[~mask] == 0)          # padded steps get no gradient


def test_bernoulli_nll_is_finite_for_huge_logits_and_rejects_bad_input():
    loss = study.BernoulliNLL()
    logits = np.array([[1e4, -1e4]], np.float32)
    assert loss(logits, np.array([[1.0, 0.0]])) == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(loss.backward()))
    with pytest.raises(ValueError, match="shape"):
        loss(logits, np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        loss(logits, np.array([[2.0, 0.0]]))
    with pytest.raises(ValueError, match="no time steps"):
        loss(logits, np.zeros((1, 2)), np.zeros(1, bool))


# -- piano rolls --------------------------------------------------------------------------------------
def test_piano_roll_samples_the_pitches_sounding_at_each_quarter_note():
    from music21 import chord, note, stream

    part = stream.Stream()
    part.insert(0.0, note.Note("C4", quarterLength=2.0))      # MIDI 60: sounds at t = 0 and 1
    part.insert(2.0, note.Note("D4", quarterLength=0.5))      # sounds at t = 2
    part.insert(2.5, note.Note("E4", quarterLength=0.5))      # between beats: never sampled
    part.insert(3.0, chord.Chord(["A0", "C8"], quarterLength=1.0))
    roll = study_data.piano_roll(part)
    assert roll.shape == (4, 88)
    on = {t: sorted(np.flatnonzero(roll[t]) + study_data.LOWEST_PITCH) for t in range(4)}
    assert on == {0: [60], 1: [60], 2: [62], 3: [21, 108]}


def test_chorales_are_built_once_and_cached_by_music21_version(tmp_path, monkeypatch):
    paths = study_data.chorale_paths()[:6]
    calls = []
    original = study_data.build_chorales

    def counting_build(paths_=None, progress=False):
        calls.append(1)
        return original(paths, progress)

    monkeypatch.setattr(study_data, "build_chorales", counting_build)
    first = study_data.load_chorales(cache_dir=tmp_path)
    second = study_data.load_chorales(cache_dir=tmp_path)
    assert len(calls) == 1
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1 and music21.__version__ in cached[0].name
    for split in study_data.SPLIT_PROPORTIONS:
        assert len(first[split]) == len(second[split])
        assert all(np.array_equal(a, b) for a, b in zip(first[split], second[split]))
    rolls = [r for split in study_data.SPLIT_PROPORTIONS for r in first[split]]
    assert rolls and all(r.shape[1] == 88 and r.dtype == bool for r in rolls)
    assert all(1 <= r.sum(1).max() <= 4 * 2 for r in rolls)   # four voices (a chord at most doubles)


def test_split_follows_boulanger_lewandowski_proportions():
    labels = study_data._split_names(382)
    assert [int((labels == s).sum()) for s in ("train", "valid", "test")] == [229, 76, 77]


def test_next_step_data_shifts_by_one_and_masks_padding():
    rolls = [np.eye(88, dtype=bool)[:5], np.eye(88, dtype=bool)[10:13]]
    data = study_data.next_step_data(rolls)
    assert data["inputs"].shape == (2, 4, 88) and data["lengths"].tolist() == [4, 2]
    assert np.array_equal(data["targets"][0, :4], rolls[0][1:])
    assert np.array_equal(data["inputs"][1, :2], rolls[1][:2]) and not data["inputs"][1, 2:].any()
    assert data["mask"].tolist() == [[True] * 4, [True, True, False, False]]
    with pytest.raises(ValueError, match="88"):
        study_data.next_step_data([np.zeros((5, 12), bool)])


# -- variants --------------------------------------------------------------------------------------------
def test_variants_are_greffs_one_change_each_from_vanilla():
    vanilla = study.variant_cell("V")
    assert vanilla == "peephole_lstm"
    for name, missing_gate in (("NIG", "i"), ("NFG", "f"), ("NOG", "o")):
        spec = study.variant_cell(name)
        assert missing_gate not in spec.gates and spec.param_names, name      # one gate gone, peepholes kept
    assert study.variant_cell("CIFG").param_names and "i" not in study.variant_cell("CIFG").gates
    assert study.variant_cell("NP") == "lstm"
    with pytest.raises(ValueError, match="FGR"):
        study.variant_cell("FGR")        # comes with issue 12; register_variant adds it
    with pytest.raises(ValueError, match="new"):
        study.register_variant("V", "again", "lstm")


# -- the driver: Optuna storage, resume, inline and Dask ----------------------------------------------------
def _states(storage_path, task="adding"):
    loaded = optuna.load_study(study_name=task, storage=study.open_storage(storage_path))
    return [t.state.name for t in loaded.trials], loaded


def test_inline_study_is_balanced_and_resumes_an_interrupted_trial(tmp_path):
    path = tmp_path / "study.log"
    kwargs = dict(variants=["V", "NP"], size="tiny", seed=3, scheduler="inline", progress=False)
    study.run_study("adding", path, trials_per_variant=1, **kwargs)
    # an interrupted driver: a trial asked and never told
    loaded = optuna.load_study(study_name="adding", storage=study.open_storage(path))
    loaded.enqueue_trial({"variant": "NP"})
    stale = loaded.ask()
    stale_params = study._suggest(stale, study._distributions(["V", "NP"]))
    result = study.run_study("adding", path, trials_per_variant=2, **kwargs)
    states, loaded = _states(path)
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1
    records = study.study_records(result)
    assert sorted(r["variant"] for r in records) == ["NP", "NP", "V", "V"]
    rerun = [t for t in loaded.trials if t.user_attrs.get("rerun_of") == stale.number]
    assert len(rerun) == 1 and rerun[0].state.name == "COMPLETE" and rerun[0].params == stale_params
    assert len(result.user_attrs["sessions"]) == 2
    with pytest.raises(ValueError, match="other settings"):
        study.run_study("adding", path, trials_per_variant=2, **{**kwargs, "seed": 4})


def test_trials_are_reproducible_from_their_seed():
    params = {"learning_rate": 0.03, "hidden_size": 9, "one_minus_momentum": 0.1, "input_noise": 0.2}
    first = study.run_trial("adding", "NP", params, 11, "tiny")
    second = study.run_trial("adding", "NP", params, 11, "tiny")
    assert first["test_loss"] == pytest.approx(second["test_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="missing"):
        study.run_trial("adding", "NP", {"learning_rate": 0.1}, 0, "tiny")


def test_a_worker_killed_mid_study_loses_no_trial(tmp_path):
    """Kill one of two LocalCluster workers while it runs a trial: the study still finishes,
    every planned trial recorded exactly once, the killed trial rerun on a live worker."""
    from dask.distributed import Client, LocalCluster

    path = tmp_path / "study.log"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, env=study.cache_environment())
    client = Client(cluster)
    killed = {}

    def kill_one_busy_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            # the trials each worker is executing right now (not merely queued)
            executing = client.run(lambda dask_worker: (os.getpid(), sorted(str(t.key) for t in
                                                                           dask_worker.state.executing)))
            busy = {address: state for address, state in executing.items() if state[1]}
            if len(executing) == 2 and busy:
                address, (pid, keys) = next(iter(busy.items()))
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, keys=keys)
                print(f"killed worker {address} (pid {pid}) while it executed {keys}")
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_busy_worker, daemon=True)
    try:
        # the workers find this process's kernel and data caches, so nothing compiles twice
        from lstmkit.codegen import user_cache_dir

        assert set(client.run(lambda: str(user_cache_dir())).values()) == {str(user_cache_dir())}
        killer.start()
        result = study.run_study("adding", path, trials_per_variant=3, variants=["V", "NP"], size="tiny",
                                 seed=5, client=client, progress=False)
        killer.join(timeout=5)
    finally:
        client.close()
        cluster.close()
    assert killed, "no worker was killed: the test did not test anything"
    states, loaded = _states(path)
    assert states == ["COMPLETE"] * 6                         # nothing lost, nothing twice
    numbers = [t.number for t in loaded.trials]
    assert numbers == sorted(set(numbers))
    killed_numbers = {int(key.split("-")[3]) for key in killed["keys"]}
    for trial in loaded.trials:
        if trial.number in killed_numbers:                    # rerun, by a worker still alive
            assert trial.user_attrs["pid"] != killed["pid"]
    print("trials:", [(t.number, t.params["variant"], t.user_attrs["pid"]) for t in loaded.trials])


# -- analysis -------------------------------------------------------------------------------------------------
def _synthetic_records():
    rng = np.random.default_rng(0)
    records = []
    for number in range(60):
        variant = ["V", "NP", "NFG"][number % 3]
        lr = 10 ** rng.uniform(-4, 0)
        loss = 5 + 3 * (np.log10(lr) + 1.5) ** 2 + (2.0 if variant == "NFG" else 0) + rng.normal(0, 0.1)
        records.append({"number": number, "variant": variant, "test_loss": loss, "learning_rate": lr,
                        "hidden_size": int(rng.integers(8, 65)), "one_minus_momentum": 10 ** rng.uniform(-2, 0),
                        "input_noise": rng.uniform()})
    return records


def test_analysis_finds_a_planted_effect():
    records = _synthetic_records()
    rows = {r["variant"]: r for r in study.summary_table(records)}
    assert rows["NFG"]["verdict"] == "worse" and rows["NP"]["verdict"] == "same"
    importances = study.fanova_importances(records)
    assert max(importances, key=importances.get) == "learning_rate"
    assert set(importances) == {"variant", *study.SEARCH_SPACE}


def test_export_and_analyse_command(tmp_path):
    storage = tmp_path / "study.db"
    study.run_study("adding", storage, trials_per_variant=2, variants=["V", "NP"], size="tiny",
                    scheduler="inline", progress=False, command="test")
    out = tmp_path / "study.json"
    document = study.export_json(storage, out, command="test")
    assert study.load_json(out) == document
    assert len(document["tasks"]["adding"]["trials"]) == 4
    run = subprocess.run([sys.executable, "-m", "lstmkit", "study", "analyse", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "fANOVA importance" in run.stdout and "reference" in run.stdout


def test_import_lstmkit_does_not_import_the_study_extra():
    code = ("import sys, lstmkit, lstmkit.__main__; "
            "print(sorted(m for m in ('optuna', 'dask', 'distributed', 'music21', 'lstmkit.study') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
