"""Checkpoints: a round trip continues training exactly; bad files fail clearly and change nothing."""
import json
import zipfile

import numpy as np
import pytest

import lstmkit
from lstmkit import tasks
from lstmkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lstmkit.models import SequenceClassifier, SequenceRegressor
from lstmkit.nn import MSELoss
from lstmkit.optim import SGD, Adam
from lstmkit.train import fit


def trained(seed=0, steps=5):
    model = SequenceRegressor("lstm", 2, 6, seed=seed)
    optimizer = Adam(model.params, lr=1e-2)
    fit(model, MSELoss(), optimizer, tasks.adding_problem_sampler(8), steps=steps, batch_size=4,
        progress=False, seed=seed)
    return model, optimizer


def snapshot(model, optimizer=None):
    state = {f"model/{k}": v.copy() for k, v in model.params.items()}
    if optimizer is not None:
        state.update({f"optimizer/{k}": np.array(v, copy=True) for k, v in optimizer.state_dict().items()})
    return state


def assert_unchanged(before, model, optimizer=None):
    after = snapshot(model, optimizer)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


def assert_refused_and_unchanged(path, model, optimizer, match):
    """Loading ``path`` raises a CheckpointError matching ``match`` and changes nothing."""
    before = snapshot(model, optimizer)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, model, optimizer)
    assert_unchanged(before, model, optimizer)


def test_round_trip_then_training_continues_identically(tmp_path):
    model, optimizer = trained()
    path = save_checkpoint(tmp_path / "run.npz", model, optimizer, step=5, note="adding")
    with np.load(path, allow_pickle=False) as archive:      # plain arrays, no pickles
        assert "model/rnn.weight_ih_l0" in archive.files and "optimizer/exp_avg.head.bias" in archive.files
        assert json.loads(str(archive["architecture"]))["cell"] == "lstm"

    restored = SequenceRegressor("lstm", 2, 6, seed=99)
    restored_optimizer = Adam(restored.params, lr=0.5)
    extra = load_checkpoint(path, restored, restored_optimizer)
    assert extra == {"step": 5, "note": "adding"}
    assert restored_optimizer.lr == 1e-2 and restored_optimizer.step_count == 5
    for name in model.params:
        np.testing.assert_array_equal(restored.params[name], model.params[name])
    for run_model, run_optimizer in ((model, optimizer), (restored, restored_optimizer)):
        fit(run_model, MSELoss(), run_optimizer, tasks.adding_problem_sampler(8), steps=3, batch_size=4,
            progress=False, seed=7)
    for name in model.params:
        np.testing.assert_array_equal(restored.params[name], model.params[name])


def test_a_plain_layer_round_trips(tmp_path):
    layer = lstmkit.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
    path = save_checkpoint(tmp_path / "gru.npz", layer)
    other = lstmkit.GRU(3, 4, num_layers=2, bidirectional=True, seed=1)
    load_checkpoint(path, other)
    for name in layer.params:
        np.testing.assert_array_equal(other.params[name], layer.params[name])
    with pytest.raises(CheckpointError, match="architecture"):
        load_checkpoint(path, lstmkit.LSTM(3, 4, num_layers=2, bidirectional=True))


@pytest.mark.parametrize("make_other,message", [
    (lambda: SequenceRegressor("lstm", 2, 7, seed=1), "shape"),                # another width
    (lambda: SequenceRegressor("gru", 2, 6, seed=1), "architecture"),          # another cell
    (lambda: SequenceRegressor("lstm_no_input_activation", 2, 6, seed=1), "architecture"),  # same shapes
    (lambda: SequenceRegressor("lstm", 2, 6, num_layers=2, seed=1), "architecture"),
    (lambda: SequenceClassifier("lstm", 5, 6, 1, seed=1), "architecture"),
])
def test_a_different_architecture_is_refused_and_nothing_changes(tmp_path, make_other, message):
    model, optimizer = trained()
    path = save_checkpoint(tmp_path / "run.npz", model, optimizer)
    other = make_other()
    other_optimizer = Adam(other.params, lr=1e-3)
    assert_refused_and_unchanged(path, other, other_optimizer, message)


def test_a_different_optimizer_is_refused_and_nothing_changes(tmp_path):
    model, optimizer = trained()
    path = save_checkpoint(tmp_path / "run.npz", model, optimizer)
    other = SequenceRegressor("lstm", 2, 6, seed=1)
    sgd = SGD(other.params, lr=0.1, momentum=0.9)
    before = snapshot(other, sgd)
    with pytest.raises(CheckpointError, match="Adam state, not SGD"):
        load_checkpoint(path, other, sgd)
    assert_unchanged(before, other, sgd)
    model_only = save_checkpoint(tmp_path / "model_only.npz", model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(model_only, other, Adam(other.params))
    assert_unchanged({k: v for k, v in before.items() if k.startswith("model/")}, other)


def test_damaged_optimizer_state_rolls_the_model_back(tmp_path):
    model, optimizer = trained()
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, optimizer)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["optimizer/exp_avg.head.bias"] = np.zeros(3, np.float32)         # wrong shape
    np.savez(path, **arrays)
    other = SequenceRegressor("lstm", 2, 6, seed=1)
    other_optimizer = Adam(other.params)
    assert_refused_and_unchanged(path, other, other_optimizer, "exp_avg.head.bias")


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "not_npz", "pickled"])
def test_a_truncated_or_corrupt_file_is_refused_and_nothing_changes(tmp_path, damage):
    model, optimizer = trained()
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, optimizer)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":                  # damage the stored bytes of an array: the zip CRC catches it
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("model/rnn.weight_hh_l0.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
        path.write_bytes(data[:start] + bytes(b ^ 0xFF for b in data[start:start + 16]) + data[start + 16:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not_npz":
        path.write_text("these are not the weights you are looking for")
    elif damage == "pickled":               # an object array would need unpickling: refused
        np.savez(path, format=np.array("lstmkit-checkpoint-1"),
                 architecture=np.array([{"cell": "lstm"}], dtype=object))
    other = SequenceRegressor("lstm", 2, 6, seed=1)
    other_optimizer = Adam(other.params)
    assert_refused_and_unchanged(path, other, other_optimizer, "truncated or corrupt|not an lstmkit checkpoint")


def test_saving_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    model, optimizer = trained()
    path = save_checkpoint(tmp_path / "run.npz", model, optimizer)
    good = path.read_bytes()

    def failing_savez(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, optimizer)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]
    with pytest.raises(ValueError, match=".npz"):
        save_checkpoint(tmp_path / "run.ckpt", model)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz", model)


# -- issue 11: files that are not checkpoints, state out of range, and how the file is written ----
def rewrite(path, **changes):
    """The checkpoint at ``path`` with some arrays replaced (None removes one)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def test_a_plain_npy_renamed_npz_is_refused(tmp_path):
    model, optimizer = trained()
    path = tmp_path / "run.npz"
    with open(path, "wb") as file:
        np.save(file, np.arange(12.0))
    assert_refused_and_unchanged(path, model, optimizer, "single .npy array")


@pytest.mark.parametrize("record", ["null", "[1, 2]", '"lstm"', "3"])
def test_an_architecture_record_that_is_not_an_object_is_refused(tmp_path, record):
    model, optimizer = trained()
    path = save_checkpoint(tmp_path / "run.npz", model, optimizer)
    rewrite(path, architecture=np.array(record))
    assert_refused_and_unchanged(path, model, optimizer, "architecture record must be a JSON object")


@pytest.mark.parametrize("key,value,message", [
    ("exp_avg_sq.head.bias", lambda v: -np.abs(v) - 1.0, "cannot be negative"),
    ("exp_avg.head.bias", lambda v: np.full_like(v, np.nan), "NaN or inf"),
    ("exp_avg_sq.rnn.weight_hh_l0", lambda v: np.full(v.shape, 1e300), "NaN or inf"),   # inf in float32
    ("lr", lambda v: np.array(-1e-3), "lr must be"),
    ("lr", lambda v: np.array(0.0), "lr must be"),
    ("betas", lambda v: np.array([0.9, 1.0]), r"betas\[1\] must be"),
    ("eps", lambda v: np.array(-1.0), "eps must be"),
    ("weight_decay", lambda v: np.array(-0.5), "weight_decay must be"),
    ("step", lambda v: np.array(-3), "non-negative integer"),
    ("step", lambda v: np.array(2.5), "non-negative integer"),
])
def test_optimizer_state_out_of_range_is_refused(tmp_path, key, value, message):
    model, optimizer = trained()
    path = save_checkpoint(tmp_path / "run.npz", model, optimizer)
    with np.load(path, allow_pickle=False) as archive:
        saved = archive[f"optimizer/{key}"]
    rewrite(path, **{f"optimizer/{key}": value(saved)})
    other = SequenceRegressor("lstm", 2, 6, seed=1)
    assert_refused_and_unchanged(path, other, Adam(other.params), message)


def test_sgd_and_adagrad_state_out_of_range_is_refused(tmp_path):
    from lstmkit.optim import Adagrad

    layer = lstmkit.LSTM(2, 3, seed=0)
    for optimizer, key, value, message in (
            (SGD(layer.params, lr=0.1, momentum=0.9), "momentum", -0.5, "momentum must be"),
            (SGD(layer.params, lr=0.1), "nesterov", 0.5, "nesterov must be"),
            (Adagrad(layer.params), "sum.weight_hh_l0", -np.ones((12, 3), np.float32), "cannot be negative"),
            (Adagrad(layer.params), "lr_decay", -1.0, "lr_decay must be")):
        grads = {name: np.ones_like(value) for name, value in layer.params.items()}
        optimizer.step(grads)
        path = save_checkpoint(tmp_path / "run.npz", layer, optimizer)
        rewrite(path, **{f"optimizer/{key}": np.asarray(value)})
        assert_refused_and_unchanged(path, layer, optimizer, message)


def test_float64_values_beyond_float32_are_refused_by_a_float32_model(tmp_path):
    wide = SequenceRegressor("lstm", 2, 6, dtype=np.float64, seed=0)
    wide.params["rnn.weight_hh_l0"][0, 0] = 1e300            # finite in float64, inf in float32
    path = save_checkpoint(tmp_path / "wide.npz", wide)
    narrow = SequenceRegressor("lstm", 2, 6, seed=1)
    assert narrow.dtype == np.float32
    assert_refused_and_unchanged(path, narrow, None, "rnn.weight_hh_l0: values up to 1e\\+300 overflow float32")


def test_a_save_killed_halfway_leaves_nothing_after_the_next_save(tmp_path):
    """A process killed (SIGKILL: no cleanup runs) in the middle of writing leaves its temporary
    file; the next save to the same path removes it."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "run.npz"
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        import lstmkit
        from lstmkit.checkpoint import save_checkpoint

        def killed_savez(file, **arrays):
            file.write(b"half of a checkpoint")
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        np.savez = killed_savez
        save_checkpoint({str(path)!r}, lstmkit.LSTM(2, 3, seed=0))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=dict(os.environ))
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0] != "run.npz"       # the temporary file, nothing at path
    save_checkpoint(path, lstmkit.LSTM(2, 3, seed=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]


def test_a_checkpoint_gets_the_umask_mode_and_is_flushed_before_the_rename(tmp_path, monkeypatch):
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append("fsync")
        return real_fsync(descriptor)

    def replace(source, destination):
        events.append(("replace", os.path.basename(destination)))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "run.npz", lstmkit.LSTM(2, 3, seed=0))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
    rename = events.index(("replace", "run.npz"))
    assert "fsync" in events[:rename]


# -- issue 18: the scheduler's state goes into checkpoints ------------------------------------
def scheduled(seed=0, steps=5):
    from lstmkit.lr_scheduler import StepLR

    model = SequenceRegressor("lstm", 2, 6, seed=seed)
    optimizer = Adam(model.params, lr=1e-2)
    scheduler = StepLR(optimizer, step_size=2, gamma=0.5)
    fit(model, MSELoss(), optimizer, tasks.adding_problem_sampler(8), steps=steps, batch_size=4,
        scheduler=scheduler, progress=False, seed=seed)
    return model, optimizer, scheduler


def test_a_scheduler_round_trips_and_its_schedule_continues(tmp_path):
    from lstmkit.lr_scheduler import StepLR

    model, optimizer, scheduler = scheduled()
    path = save_checkpoint(tmp_path / "run.npz", model, optimizer, scheduler)
    restored = SequenceRegressor("lstm", 2, 6, seed=99)
    restored_optimizer = Adam(restored.params, lr=1e-2)
    restored_scheduler = StepLR(restored_optimizer, step_size=2, gamma=0.5)
    load_checkpoint(path, restored, restored_optimizer, restored_scheduler)
    assert restored_scheduler.last_epoch == scheduler.last_epoch == 5
    histories = [fit(m, MSELoss(), o, tasks.adding_problem_sampler(8), steps=4, batch_size=4, scheduler=s,
                     progress=False, seed=7)["lr"]
                 for m, o, s in ((model, optimizer, scheduler), (restored, restored_optimizer, restored_scheduler))]
    assert histories[0] == histories[1] == [2.5e-3, 1.25e-3, 1.25e-3, 6.25e-4]
    for name in model.params:
        np.testing.assert_array_equal(restored.params[name], model.params[name])


def test_a_scheduler_with_other_settings_is_refused_and_nothing_changes(tmp_path):
    from lstmkit.lr_scheduler import ExponentialLR, StepLR

    model, optimizer, scheduler = scheduled()
    path = save_checkpoint(tmp_path / "run.npz", model, optimizer, scheduler)
    other = SequenceRegressor("lstm", 2, 6, seed=3)
    other_optimizer = Adam(other.params, lr=1e-2)
    for other_scheduler, message in ((StepLR(other_optimizer, step_size=3, gamma=0.5), "step_size"),
                                     (ExponentialLR(other_optimizer, gamma=0.9), "StepLR state")):
        before = snapshot(other, other_optimizer)
        counters = other_scheduler.state_dict()
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path, other, other_optimizer, other_scheduler)
        assert_unchanged(before, other, other_optimizer)
        assert all(np.array_equal(counters[k], v) for k, v in other_scheduler.state_dict().items())
