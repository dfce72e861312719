"""The training loop: reproducibility, history, evaluation, early stopping, progress bar."""
import math

import numpy as np
import pytest

from lstmkit import tasks
from lstmkit.models import SequenceClassifier, SequenceRegressor
from lstmkit.module import Module
from lstmkit.nn import MSELoss, SoftmaxCrossEntropy
from lstmkit.optim import SGD, Adam
from lstmkit.train import evaluate, fit


class Constant(Module):
    """Predicts one learned number for every sequence: the loop's logic without a network."""

    def __init__(self, value=0.0):
        self.params = {"value": np.array([value])}
        self.grads = {}
        self.seen = []

    def forward(self, inputs, lengths=None):
        self.seen.append(np.array(inputs[:, 0]))
        self._rows = len(inputs)
        return np.repeat(self.params["value"][None, :], self._rows, axis=0)

    def backward(self, d_output):
        self.grads = {"value": d_output.sum(axis=0)}


def constant_data(rows, target):
    return {"inputs": np.arange(rows, dtype=np.float64)[:, None], "targets": np.full((rows, 1), target)}


def test_an_epoch_visits_every_row_once_in_a_seeded_order():
    model = Constant()
    history = fit(model, MSELoss(), SGD(model.params, lr=0.1), constant_data(10, 1.0), epochs=2,
                  batch_size=4, progress=False, seed=3)
    assert history["steps_run"] == 6                        # ceil(10 / 4) per epoch
    first_epoch = np.concatenate(model.seen[:3])
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert sorted(np.concatenate(model.seen[3:]).tolist()) == list(range(10))
    again = Constant()
    fit(again, MSELoss(), SGD(again.params, lr=0.1), constant_data(10, 1.0), epochs=2, batch_size=4,
        progress=False, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(model.seen, again.seen))
    other = Constant()
    fit(other, MSELoss(), SGD(other.params, lr=0.1), constant_data(10, 1.0), epochs=2, batch_size=4,
        progress=False, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(model.seen, other.seen))


def test_early_stopping_and_restoring_the_best_parameters():
    # training pulls the value from 0 toward 1 while the held-out target is 0.2: eval loss
    # falls until the value passes 0.2, then rises; patience 2 stops two evaluations later
    model = Constant(0.0)
    history = fit(model, MSELoss(), SGD(model.params, lr=0.05), constant_data(8, 1.0), steps=200,
                  batch_size=8, eval_data=constant_data(4, 0.2), eval_every=1, patience=2,
                  restore_best=True, progress=False)
    eval_loss = history["eval_loss"]
    best = int(np.argmin(eval_loss))
    assert history["stopped_early"] and history["steps_run"] == history["eval_step"][best] + 2
    assert all(eval_loss[k] >= eval_loss[best] for k in range(best + 1, len(eval_loss)))
    assert history["best_step"] == history["eval_step"][best]
    assert history["best_eval_loss"] == eval_loss[best]
    assert evaluate(model, MSELoss(), constant_data(4, 0.2))["loss"] == pytest.approx(eval_loss[best])


def test_stop_when_and_history_fields():
    model = Constant(0.0)
    history = fit(model, MSELoss(), SGD(model.params, lr=0.05), constant_data(8, 1.0), steps=500,
                  batch_size=8, eval_data=constant_data(4, 1.0), eval_every=5, metrics=("mse",),
                  clip_norm=10.0, stop_when=lambda record: record["loss"] < 0.01, progress=False)
    assert history["stopped_early"]
    assert history["eval_loss"][-1] < 0.01 <= history["eval_loss"][-2]
    assert history["eval_step"] == list(range(5, history["steps_run"] + 1, 5))
    assert history["eval_mse"] == pytest.approx(history["eval_loss"])
    assert len(history["train_loss"]) == len(history["grad_norm"]) == history["steps_run"]
    assert history["step"] == list(range(1, history["steps_run"] + 1))


def test_a_real_model_learns_a_short_gap_reproducibly(capsys):
    def run():
        data = tasks.long_gap_language(200, gap=3, num_countries=4, seed=1)
        model = SequenceClassifier("lstm", len(data["vocabulary"].words), 16, 4, seed=0)
        return model, fit(model, SoftmaxCrossEntropy(), Adam(model.params, lr=1e-2),
                          tasks.long_gap_sampler(3, num_countries=4), steps=150, batch_size=32,
                          eval_data={"inputs": data["inputs"], "targets": data["targets"]},
                          eval_every=50, metrics=("accuracy",), clip_norm=1.0, progress=False, seed=2)
    model, history = run()
    assert capsys.readouterr().err == ""                     # progress=False keeps stderr clean
    assert history["eval_accuracy"][-1] > 0.95
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    model_again, history_again = run()
    assert history_again["train_loss"] == history["train_loss"]
    for name in model.params:
        np.testing.assert_array_equal(model.params[name], model_again.params[name])


def test_progress_bar_goes_to_stderr(capsys):
    model = Constant()
    fit(model, MSELoss(), SGD(model.params, lr=0.1), constant_data(4, 1.0), steps=20, progress=True)
    assert "training" in capsys.readouterr().err


def test_masked_sequence_training_and_exact_masked_evaluation():
    """Variable lengths through the loop: lengths go to forward, the mask to the loss."""
    rng = np.random.default_rng(0)
    data = tasks.adding_problem(64, 24, variant="hochreiter1997", seed=0)
    model = SequenceRegressor("gru", 2, 8, seed=0)
    history = fit(model, MSELoss(), Adam(model.params, lr=1e-2), data, steps=5, batch_size=16,
                  eval_data=data, eval_every=5, progress=False, seed=rng)
    whole = MSELoss()(model.forward(data["inputs"], data["lengths"]), data["targets"])
    assert history["eval_loss"][-1] == pytest.approx(whole)
    # accuracy over a mask counts only the selected positions, whatever the chunking
    logits = rng.standard_normal((6, 4, 3))
    targets = rng.integers(0, 3, (6, 4))
    mask = rng.random((6, 4)) < 0.5

    class Fixed(Constant):
        def forward(self, inputs, lengths=None):
            return logits[inputs]

    batch = {"inputs": np.arange(6), "targets": targets, "mask": mask}
    result = evaluate(Fixed(), SoftmaxCrossEntropy(), batch, metrics=("accuracy",), batch_size=4)
    expected = (logits.argmax(-1) == targets)[mask].mean()
    assert result["accuracy"] == pytest.approx(expected)
    assert result["loss"] == pytest.approx(SoftmaxCrossEntropy()(logits, targets, mask))


def test_bad_arguments_are_named():
    model = Constant()
    with pytest.raises(ValueError, match="exactly one of steps or epochs"):
        fit(model, MSELoss(), SGD(model.params), constant_data(4, 1.0), progress=False)
    with pytest.raises(ValueError, match="sampler"):
        fit(model, MSELoss(), SGD(model.params), tasks.adding_problem_sampler(), epochs=1, progress=False)
    with pytest.raises(TypeError, match="'inputs' and 'targets'"):
        fit(model, MSELoss(), SGD(model.params), {"x": np.zeros(3)}, steps=1, progress=False)
    with pytest.raises(ValueError, match="need eval_data"):
        fit(model, MSELoss(), SGD(model.params), constant_data(4, 1.0), steps=1, patience=2, progress=False)
    diverging = Constant()
    with pytest.raises(FloatingPointError, match="learning rate"), np.errstate(over="ignore"):
        fit(diverging, MSELoss(), SGD(diverging.params, lr=1e200), constant_data(4, 1e200), steps=10,
            progress=False)
    assert math.isfinite(float(model.params["value"][0]))


# -- issue 11: every option checked before the first step; a NaN target named as such -----------
@pytest.mark.parametrize("options,error,message", [
    ({"eval_every": 0}, ValueError, "eval_every must be a positive integer"),
    ({"patience": 0}, ValueError, "patience must be a positive integer"),
    ({"patience": -2}, ValueError, "patience must be a positive integer"),
    ({"patience": 1.5}, ValueError, "patience must be a positive integer"),
    ({"metrics": ("acuracy",)}, ValueError, "unknown metric 'acuracy'"),
    ({"eval_data": constant_data(0, 1.0)}, ValueError, "eval_data: holds no sequences"),
    ({"train_data": constant_data(0, 1.0)}, ValueError, "train_data: holds no sequences"),
    ({"steps": 2.5}, ValueError, "steps must be a positive integer"),
    ({"clip_norm": float("nan")}, ValueError, "clip_norm must be"),
])
def test_bad_options_are_refused_before_the_first_step(options, error, message):
    model = Constant(0.5)
    arguments = {"train_data": constant_data(4, 1.0), "steps": 3, "batch_size": 2,
                 "eval_data": constant_data(4, 1.0), "eval_every": 1, "progress": False, **options}
    with pytest.raises(error, match=message):
        fit(model, MSELoss(), SGD(model.params, lr=0.1), **arguments)
    assert model.seen == [] and model.params["value"][0] == 0.5      # no step was taken


def test_a_nan_target_is_named_not_blamed_on_the_learning_rate():
    model = Constant()
    data = constant_data(4, 1.0)
    data["targets"][2, 0] = np.nan
    with pytest.raises(ValueError, match=r"train_data: 'targets' contains NaN or inf .* index \(2, 0\)"):
        fit(model, MSELoss(), SGD(model.params), data, steps=3, progress=False)
    assert model.seen == []

    def sampler(batch_size, rng):
        batch = constant_data(batch_size, 1.0)
        batch["targets"][-1] = np.nan
        return batch

    with pytest.raises(ValueError, match="the batch the sampler gave for step 1: 'targets' contains NaN"):
        fit(model, MSELoss(), SGD(model.params), sampler, steps=3, progress=False)
    assert model.seen == [] and model.params["value"][0] == 0.0


# -- issue 18: fit takes a learning-rate scheduler ---------------------------------------------
def test_fit_steps_a_scheduler_per_step_and_a_plateau_scheduler_per_evaluation():
    from lstmkit import tasks
    from lstmkit.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau
    from lstmkit.models import SequenceRegressor
    from lstmkit.nn import MSELoss
    from lstmkit.optim import SGD

    model = SequenceRegressor("lstm", 2, 4, seed=0)
    optimizer = SGD(model.params, lr=0.1)
    cosine = CosineAnnealingLR(optimizer, T_max=4)
    history = fit(model, MSELoss(), optimizer, tasks.adding_problem_sampler(8), steps=5, batch_size=4,
                  scheduler=cosine, progress=False)
    reference = CosineAnnealingLR(SGD({"w": np.zeros(1)}, lr=0.1), T_max=4)
    expected = [reference.get_last_lr()[0]]
    for _ in range(4):
        reference.step()
        expected.append(reference.get_last_lr()[0])
    assert history["lr"] == expected

    optimizer = SGD(model.params, lr=0.1)
    plateau = ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    eval_data = tasks.adding_problem_sampler(8)(16, np.random.default_rng(1))
    history = fit(model, MSELoss(), optimizer, tasks.adding_problem_sampler(8), steps=6, batch_size=4,
                  eval_data=eval_data, eval_every=1, scheduler=plateau, progress=False)
    assert plateau.last_epoch == 6                   # one step per evaluation
    assert history["lr"][0] == 0.1


def test_fit_refuses_a_scheduler_it_cannot_use_before_training():
    from lstmkit import tasks
    from lstmkit.lr_scheduler import ReduceLROnPlateau, StepLR
    from lstmkit.models import SequenceRegressor
    from lstmkit.nn import MSELoss
    from lstmkit.optim import SGD

    model = SequenceRegressor("lstm", 2, 4, seed=0)
    before = {k: v.copy() for k, v in model.params.items()}
    optimizer = SGD(model.params, lr=0.1)
    other = StepLR(SGD({"w": np.zeros(1)}, lr=0.1), step_size=1)
    with pytest.raises(ValueError, match="scheduler of this optimizer"):
        fit(model, MSELoss(), optimizer, tasks.adding_problem_sampler(8), steps=2, scheduler=other, progress=False)
    with pytest.raises(ValueError, match="needs eval_data"):
        fit(model, MSELoss(), optimizer, tasks.adding_problem_sampler(8), steps=2,
            scheduler=ReduceLROnPlateau(optimizer), progress=False)
    assert all(np.array_equal(before[k], model.params[k]) for k in before)
