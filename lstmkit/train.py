"""The training loop: minibatches, backward, clipping, an optimizer step, evaluation.

A *batch* is a dict of arrays whose first axis runs over sequences:

* ``inputs``: what the model's ``forward`` takes ([B, T, n] features or [B, T] token ids);
* ``targets``: what the loss compares the output with;
* ``lengths`` (optional): [B] sequence lengths, passed to ``forward``;
* ``mask`` (optional): passed to the loss, e.g. [B, T] for padded steps.

The tasks in :mod:`lstmkit.tasks` return data in this form. :func:`fit`
takes the training data either as such a dict (it draws shuffled minibatches
from it, epoch after epoch) or as a function ``sample(batch_size, rng) →
batch`` that makes fresh data for every step (the adding problem).
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from .optim import clip_grad_norm

__all__ = ["fit", "evaluate", "accuracy", "mean_squared_error", "take_batch"]


def accuracy(predictions, batch):
    """Fraction of positions whose largest logit is the target (masked positions skipped)."""
    correct = predictions.argmax(axis=-1) == batch["targets"]
    if batch.get("mask") is None:
        return float(correct.mean())
    mask = np.broadcast_to(np.asarray(batch["mask"]).reshape(
        np.shape(batch["mask"]) + (1,) * (correct.ndim - np.ndim(batch["mask"]))), correct.shape)
    return float((correct & (mask > 0)).sum() / max((mask > 0).sum(), 1))


def mean_squared_error(predictions, batch):
    """Mean of (prediction − target)² over all elements."""
    return float(np.mean((predictions.astype(np.float64) - batch["targets"]) ** 2))


METRICS = {"accuracy": accuracy, "mse": mean_squared_error}


def take_batch(data, index):
    """The rows ``index`` of every array in a batch dict."""
    return {key: (value[index] if isinstance(value, np.ndarray) else value) for key, value in data.items()}


def _check_data(data, what):
    """A batch dict with at least one row, its arrays of equal length and its targets finite."""
    if not isinstance(data, dict) or "inputs" not in data or "targets" not in data:
        raise TypeError(f"{what}: expected a dict with 'inputs' and 'targets' arrays "
                        f"(and optionally 'lengths', 'mask'), got {type(data).__name__}")
    rows = len(data["inputs"])
    if rows == 0:
        raise ValueError(f"{what}: holds no sequences ('inputs' has 0 rows)")
    for key in ("targets", "lengths", "mask"):
        if data.get(key) is not None and len(data[key]) != rows:
            raise ValueError(f"{what}: '{key}' has {len(data[key])} rows, 'inputs' has {rows}")
    _check_targets(data["targets"], what)
    return rows


def _check_targets(targets, what):
    targets = np.asarray(targets)
    if targets.dtype.kind in "fc" and not np.all(np.isfinite(targets)):
        bad = np.argwhere(~np.isfinite(targets))
        raise ValueError(f"{what}: 'targets' contains NaN or inf ({len(bad)} value(s), the first at "
                         f"index {tuple(int(i) for i in bad[0])}); a loss on them cannot be trained")


def _check_positive_int(name, value, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_metrics(metrics):
    if isinstance(metrics, str) or not isinstance(metrics, (tuple, list)):
        raise TypeError(f"metrics: expected a tuple or list of names or functions, got {metrics!r}")
    for metric in metrics:
        if isinstance(metric, str):
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)} or pass "
                                 f"a function f(predictions, batch) → float")
        elif not callable(metric):
            raise TypeError(f"metrics: expected names from {sorted(METRICS)} or functions, got {metric!r}")


def _forward_loss(model, loss, batch):
    predictions = model.forward(batch["inputs"], batch.get("lengths"))
    value = loss.forward(predictions, batch["targets"], batch.get("mask"))
    return predictions, value


def evaluate(model, loss, data, metrics=(), batch_size=1024):
    """Loss and metrics on held-out data; no gradients, no parameter changes.

    Runs in chunks of ``batch_size`` sequences, then computes the loss and
    every metric once on all predictions, so averages over masks are exact.
    ``metrics`` are names from ``METRICS`` (``"accuracy"``, ``"mse"``) or
    functions ``f(predictions, batch) → float``. Returns ``{"loss": …, name: …}``.
    """
    rows = _check_data(data, "eval data")
    _check_metrics(metrics)
    batch_size = _check_positive_int("batch_size", batch_size, allow_none=False)
    predict = getattr(model, "predict", model.forward)   # keeps nothing for backward, where it can
    training = getattr(model, "training", False)
    if training:
        model.eval()                # dropout off while evaluating, as model.eval() in a torch loop
    try:
        predictions = [predict(chunk["inputs"], chunk.get("lengths"))
                       for chunk in (take_batch(data, slice(start, start + batch_size))
                                     for start in range(0, rows, batch_size))]
    finally:
        if training:
            model.train()
    predictions = np.concatenate(predictions, axis=0)
    result = {"loss": loss.forward(predictions, data["targets"], data.get("mask"))}
    for metric in metrics:
        name, function = (metric, METRICS[metric]) if isinstance(metric, str) else (metric.__name__, metric)
        result[name] = function(predictions, data)
    return result


def _backward_options(model):
    """``input_gradient=False`` for a model whose ``backward`` takes it (those of
    :mod:`lstmkit.models`): training never reads the gradient of the data, which torch too
    leaves out for an input that does not require one. Other models are called with
    ``backward(d_output)`` alone."""
    try:
        parameters = inspect.signature(model.backward).parameters
    except (TypeError, ValueError):      # a backward inspect cannot read: call it plainly
        return {}
    return {"input_gradient": False} if "input_gradient" in parameters else {}


def fit(model, loss, optimizer, train_data, *, steps=None, epochs=None, batch_size=32,
        eval_data=None, eval_every=None, metrics=(), clip_norm=None, patience=None, min_delta=0.0,
        restore_best=False, stop_when=None, scheduler=None, progress=True, seed=0):
    """Train ``model`` and return its history.

    * ``model``: has ``forward(inputs, lengths)``, ``backward(d_output)``,
      ``params`` and ``grads`` (the models in :mod:`lstmkit.models`); a ``backward`` that
      takes ``input_gradient`` is called with ``input_gradient=False``;
    * ``loss``: ``forward(predictions, targets, mask) → float`` and
      ``backward() → d_predictions`` (:mod:`lstmkit.nn`);
    * ``optimizer``: ``step(grads)`` (:mod:`lstmkit.optim`);
    * ``train_data``: a batch dict to draw shuffled minibatches from, or a
      function ``sample(batch_size, rng) → batch``;
    * ``steps`` or ``epochs`` (epochs need a dict): how long to train;
    * ``eval_data``, ``eval_every`` (steps; default once per epoch, or every
      ``steps // 20``), ``metrics``: held-out evaluation, see :func:`evaluate`;
    * ``clip_norm``: clip the global gradient norm before each step;
    * ``patience``: early stopping after this many evaluations without the
      eval loss improving by more than ``min_delta``; ``restore_best`` puts
      back the parameters of the best evaluation at the end;
    * ``stop_when(record) → bool``: stop once an evaluation record (a dict
      ``{"step", "loss", <metrics>}``) satisfies it, e.g. a target accuracy;
    * ``scheduler`` (:mod:`lstmkit.lr_scheduler`, over ``optimizer``): stepped after
      every optimizer step, so its ``step_size`` or ``T_max`` counts steps; a
      ``ReduceLROnPlateau`` is stepped with each evaluation's loss instead;
    * ``progress``: a tqdm bar (``progress=False`` for notebooks and tests);
    * ``seed``: the minibatch order / sampling; the model's own seed fixes
      its initial weights, so both seeds together make a run reproducible.

    Returns a dict of plain lists and numbers: ``step``, ``train_loss`` (per
    step), ``lr`` (per step, the rate it used), ``grad_norm`` (per step, before
    clipping; when ``clip_norm``),
    ``eval_step``, ``eval_loss``, ``eval_<metric>``, ``best_step``,
    ``best_eval_loss``, ``stopped_early`` and ``steps_run``.
    """
    # every option is checked here, before the first step changes a parameter
    sampler = train_data if callable(train_data) else None
    rows = None if sampler else _check_data(train_data, "train_data")
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps or epochs")
    batch_size = _check_positive_int("batch_size", batch_size, allow_none=False)
    steps = _check_positive_int("steps", steps)
    epochs = _check_positive_int("epochs", epochs)
    if epochs is not None:
        if sampler:
            raise ValueError("epochs need train_data as a dict of arrays; with a sampler give steps")
        steps = epochs * math.ceil(rows / batch_size)
    eval_every = _check_positive_int("eval_every", eval_every)
    patience = _check_positive_int("patience", patience)
    _check_metrics(metrics)
    if clip_norm is not None and not (isinstance(clip_norm, (int, float, np.integer, np.floating))
                                      and 0 < clip_norm < math.inf):
        raise ValueError(f"clip_norm must be a positive finite number, got {clip_norm!r}")
    if not (isinstance(min_delta, (int, float, np.integer, np.floating)) and 0 <= min_delta < math.inf):
        raise ValueError(f"min_delta must be a non-negative finite number, got {min_delta!r}")
    if stop_when is not None and not callable(stop_when):
        raise TypeError(f"stop_when must be a function record → bool, got {stop_when!r}")
    plateau = False
    if scheduler is not None:
        from .lr_scheduler import LRScheduler, ReduceLROnPlateau

        if not isinstance(scheduler, LRScheduler) or scheduler.optimizer is not optimizer:
            raise ValueError("scheduler: expected an lstmkit.lr_scheduler scheduler of this optimizer, "
                             f"got {scheduler!r}")
        plateau = isinstance(scheduler, ReduceLROnPlateau)
        if plateau and eval_data is None:
            raise ValueError("a ReduceLROnPlateau scheduler steps on the eval loss: it needs eval_data")
    if eval_data is not None:
        _check_data(eval_data, "eval_data")
        if eval_every is None:
            eval_every = math.ceil(rows / batch_size) if rows else max(1, steps // 20)
    elif patience is not None or stop_when is not None or restore_best or eval_every is not None or metrics:
        raise ValueError("patience, stop_when, restore_best, eval_every and metrics need eval_data")

    backward_options = _backward_options(model)
    rng = np.random.default_rng(seed)
    history = {"step": [], "train_loss": [], "lr": [], "eval_step": [], "eval_loss": [],
               **{f"eval_{_metric_name(m)}": [] for m in metrics}}
    if clip_norm is not None:
        history["grad_norm"] = []
    best = {"loss": math.inf, "step": None, "params": None}
    evaluations_without_improvement = 0
    stopped_early = False
    order, position = None, 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="training", leave=False)
    try:
        for step in range(1, steps + 1):
            if sampler:
                batch = sampler(batch_size, rng)
                _check_data(batch, f"the batch the sampler gave for step {step}")
            else:
                if order is None or position >= rows:
                    order, position = rng.permutation(rows), 0
                batch = take_batch(train_data, order[position:position + batch_size])
                position += batch_size
            predictions, value = _forward_loss(model, loss, batch)
            if not math.isfinite(value):    # the targets are finite: the model's outputs are not
                raise FloatingPointError(f"the training loss is {value} at step {step}; lower the "
                                         f"learning rate or clip gradients (clip_norm)")
            model.backward(loss.backward(), **backward_options)
            if clip_norm is not None:
                history["grad_norm"].append(clip_grad_norm(model.grads, clip_norm))
            history["lr"].append(float(optimizer.lr) if hasattr(optimizer, "lr") else None)
            optimizer.step(model.grads)
            if scheduler is not None and not plateau:
                scheduler.step()
            history["step"].append(step)
            history["train_loss"].append(value)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == steps:
                    bar.set_postfix(loss=f"{value:.4f}")

            if eval_data is not None and (step % eval_every == 0 or step == steps):
                record = evaluate(model, loss, eval_data, metrics)
                history["eval_step"].append(step)
                for name, metric_value in record.items():
                    history[f"eval_{name}"].append(metric_value)
                if plateau:
                    scheduler.step(record["loss"])
                if record["loss"] < best["loss"] - min_delta:
                    best.update(loss=record["loss"], step=step,
                                params={k: v.copy() for k, v in model.params.items()} if restore_best else None)
                    evaluations_without_improvement = 0
                else:
                    evaluations_without_improvement += 1
                if patience is not None and evaluations_without_improvement >= patience:
                    stopped_early = True
                    break
                if stop_when is not None and stop_when({"step": step, **record}):
                    stopped_early = True
                    break
    finally:
        if bar is not None:
            bar.close()
    if restore_best and best["params"] is not None:
        for name, value in best["params"].items():
            model.params[name][...] = value
    history.update(best_step=best["step"], best_eval_loss=None if best["step"] is None else best["loss"],
                   stopped_early=stopped_early, steps_run=len(history["step"]))
    return history


def _metric_name(metric):
    return metric if isinstance(metric, str) else metric.__name__
