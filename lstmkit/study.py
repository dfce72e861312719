"""Which LSTM variant is best? Greff et al.'s search-space study at small scale, on Dask.

Greff, Srivastava, Koutník, Steunebrink & Schmidhuber (2015), *LSTM: A Search
Space Odyssey*, trained eight variants of the LSTM with random hyper-parameters
on three tasks (5,400 runs) and compared the distributions of their test
losses. This module does the same on the cells lstmkit has:

* **variants** (:data:`VARIANTS`): V, the vanilla LSTM *with peepholes*, and
  Greff's one-change-each ablations of it, NIG, NFG, NOG, NIAF, NOAF (no
  input/forget/output gate, no input/output activation; peepholes kept), NP (no
  peepholes: ``torch.nn.LSTM``), CIFG (coupled input and forget gate, with
  peepholes), and the GRU. :func:`register_variant` adds more (FGR, MUT1–3);
* **tasks** (:data:`TASKS`): ``jsb``, next-step prediction of the Bach chorales'
  piano rolls (:mod:`lstmkit.study_data`), a sigmoid per pitch, loss the
  negative log-likelihood per time step; ``adding``, the adding problem of
  chapter 10, mean squared error;
* **random search** with Optuna's ``RandomSampler`` over Greff's
  hyper-parameters (:data:`SEARCH_SPACE`); trials live in Optuna storage (a
  journal file or SQLite), so an interrupted study resumes where it stopped;
* **Dask** runs the trials: an embedded ``LocalCluster`` sized to the machine,
  or an existing cluster (``scheduler="tcp://host:port"``). The driver asks
  Optuna for a trial, submits ``run_trial`` to Dask and tells Optuna the result
  when it comes back: only the driver writes the storage, so a worker killed
  mid-trial loses nothing that finished, and Dask reruns its trial elsewhere;
* **analysis**: per-variant box plots (all trials and the best 10 %), Welch's
  t-tests against V, fANOVA importances (Optuna's ``FanovaImportanceEvaluator``)
  and test loss against learning rate (Greff's Figs. 3–5).

Optuna, Dask and music21 are the ``study`` extra: ``import lstmkit`` never
imports this module.
"""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .nn import Loss

__all__ = ["BernoulliNLL", "Variant", "VARIANTS", "register_variant", "variant_cell", "TaskConfig",
           "TASKS", "SIZES", "SEARCH_SPACE", "run_trial", "run_study", "open_storage",
           "study_records", "export_json", "load_json", "summary_table", "fanova_importances",
           "plot_boxes", "plot_learning_rate", "precompile"]


# -- the output layer: a Bernoulli per pitch ------------------------------------------------
def _log_sigmoid_parts(logits):
    """softplus(z) = log(1 + eᶻ), computed without overflow for any z."""
    return np.maximum(logits, 0.0) + np.log1p(np.exp(-np.abs(logits)))


class BernoulliNLL(Loss):
    """Negative log-likelihood of independent Bernoulli outputs, summed over the last axis
    (the 88 pitches) and averaged over time steps — "per time step", as Boulanger-Lewandowski
    et al. (2012) and Greff et al. (2015) report it.

    ``forward(logits, targets, mask=None)``: p = σ(logits); per step
    −Σ_k [y_k log p_k + (1 − y_k) log(1 − p_k)] = Σ_k [softplus(z_k) − y_k z_k];
    the mean over the steps the mask selects ([B, T], True on real steps).
    ``backward()`` = (σ(z) − y) · mask / (number of selected steps).
    """

    def forward(self, logits, targets, mask=None):
        if not isinstance(logits, np.ndarray) or logits.dtype.kind != "f" or logits.ndim < 1:
            raise TypeError("BernoulliNLL logits: expected a float NumPy array [..., K]")
        targets = np.asarray(targets)
        if targets.shape != logits.shape:
            raise ValueError(f"BernoulliNLL targets: expected shape {logits.shape} (the logits'), "
                             f"got {targets.shape}")
        if targets.size and (targets.min() < 0 or targets.max() > 1):
            raise ValueError("BernoulliNLL targets: expected values in [0, 1] (1 = the pitch sounds)")
        steps_shape = logits.shape[:-1]
        if mask is None:
            weights = np.ones(steps_shape, dtype=logits.dtype)
        else:
            mask = np.asarray(mask)
            if mask.shape != steps_shape:
                raise ValueError(f"BernoulliNLL mask: expected shape {steps_shape}, got {mask.shape}")
            weights = mask.astype(logits.dtype)
        count = float(weights.sum())
        if count == 0:
            raise ValueError("BernoulliNLL: the mask selects no time steps")
        targets = targets.astype(logits.dtype, copy=False)
        per_step = (_log_sigmoid_parts(logits) - targets * logits).sum(axis=-1, dtype=np.float64)
        self._cache = (logits, targets, weights, count)
        self.count = count
        return float((per_step * weights).sum() / count)

    def backward(self):
        if self._cache is None:
            raise RuntimeError("call forward before backward")
        logits, targets, weights, count = self._cache
        probabilities = 0.5 * (1.0 + np.tanh(0.5 * logits))     # σ(z), no overflow
        return ((probabilities - targets) * (weights[..., None] / count)).astype(logits.dtype)


# -- variants ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """A cell of the study: its short name (Greff's), what it changes, and how to build it.

    ``cell`` is a built-in cell name or a zero-argument function returning a CellSpec
    (built on the worker, so a spec needs no pickling).
    """

    name: str
    description: str
    cell: object
    reference: str = "Greff et al. 2015"


VARIANTS: dict = {}


def register_variant(name, description, cell, reference="Greff et al. 2015"):
    """Add a variant to the study (FGR and MUT1–3 join this way)."""
    if not isinstance(name, str) or not name or name in VARIANTS:
        raise ValueError(f"variant name must be a new non-empty string, got {name!r}")
    if not (isinstance(cell, str) or callable(cell)):
        raise TypeError(f"cell: expected a built-in cell name or a function returning a CellSpec, got {cell!r}")
    VARIANTS[name] = Variant(name, description, cell, reference)
    return VARIANTS[name]


def _peephole_ablation(name, **change):
    def build():
        from .cells import lstm_spec

        return lstm_spec(f"greff_{name.lower()}", peepholes=True, **change,
                         description=f"Greff et al. 2015: {name} (peepholes kept)")
    build.__name__ = f"greff_{name.lower()}"
    return build


register_variant("V", "vanilla LSTM with peepholes", "peephole_lstm")
register_variant("NIG", "no input gate", _peephole_ablation("NIG", input_gate=False))
register_variant("NFG", "no forget gate", _peephole_ablation("NFG", forget_gate=False))
register_variant("NOG", "no output gate", _peephole_ablation("NOG", output_gate=False))
register_variant("NIAF", "no input activation function", _peephole_ablation("NIAF", input_activation=False))
register_variant("NOAF", "no output activation function", _peephole_ablation("NOAF", output_activation=False))
register_variant("NP", "no peepholes (torch.nn.LSTM)", "lstm")
register_variant("CIFG", "coupled input and forget gate", _peephole_ablation("CIFG", coupled=True))
register_variant("GRU", "gated recurrent unit (torch.nn.GRU)", "gru", reference="Cho et al. 2014")

REFERENCE_VARIANT = "V"


def variant_cell(name):
    """The cell of a variant: a built-in name or a CellSpec."""
    if name not in VARIANTS:
        raise ValueError(f"no variant {name!r}; choose from {list(VARIANTS)}")
    cell = VARIANTS[name].cell
    return cell if isinstance(cell, str) else cell()


# -- the search space (Greff et al. 2015, §4.1, scaled to this machine) --------------------------
# Greff: learning rate log-uniform in [1e-6, 1e-2] on the gradient of a whole sequence's summed loss
# with one sequence per update; here the loss is a mean over time steps and minibatch, which makes
# gradients ~T (≈ 50) times smaller, so the range moves up by that factor (and is widened to
# show both ends of the curve). Hidden units: Greff [20, 200]; here [8, 64] so a trial takes
# seconds. Momentum: 1 − log-uniform [0.01, 1], as Greff. Input noise std: uniform [0, 1], as Greff.
SEARCH_SPACE = {
    "learning_rate": ("float", 1e-4, 1.0, True),
    "hidden_size": ("int", 8, 64, False),
    "one_minus_momentum": ("float", 0.01, 1.0, True),
    "input_noise": ("float", 0.0, 1.0, False),
}


def _distributions(variants):
    import optuna

    result = {"variant": optuna.distributions.CategoricalDistribution(list(variants))}
    for name, (kind, low, high, log) in SEARCH_SPACE.items():
        result[name] = (optuna.distributions.IntDistribution(low, high, log=log) if kind == "int"
                        else optuna.distributions.FloatDistribution(low, high, log=log))
    return result


# -- tasks and their sizes ------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskConfig:
    """How much data and training one trial gets."""

    epochs: int
    patience: int
    batch_size: int
    train: int | None = None        # sequences (None: the whole split)
    valid: int | None = None
    test: int | None = None
    length: int = 50                # adding problem only
    extra: dict = field(default_factory=dict)

    def as_dict(self):
        return {"epochs": self.epochs, "patience": self.patience, "batch_size": self.batch_size,
                "train": self.train, "valid": self.valid, "test": self.test, "length": self.length}


TASKS = ("jsb", "adding")
SIZES = {
    # seconds per trial: for tests, the chapter's live cells and the command's smoke runs
    "tiny": {"jsb": TaskConfig(epochs=2, patience=2, batch_size=8, train=16, valid=8, test=8),
             "adding": TaskConfig(epochs=3, patience=3, batch_size=32, train=256, valid=128, test=128,
                                  length=20)},
    # the committed study: every chorale, up to 15 epochs with early stopping
    "small": {"jsb": TaskConfig(epochs=15, patience=3, batch_size=8),
              "adding": TaskConfig(epochs=12, patience=3, batch_size=32, train=2000, valid=500, test=500,
                                   length=40)},
}

_DATA = {}      # per worker process: (task, size) → (train, valid, test)


def task_data(task, size):
    """(train, valid, test) batch dicts of a task at a size; built once per process."""
    key = (task, size)
    if key not in _DATA:
        config = _config(task, size)
        if task == "jsb":
            from .study_data import load_chorales, next_step_data

            chorales = load_chorales()
            splits = [next_step_data(chorales[s][:n]) for s, n in
                      (("train", config.train), ("valid", config.valid), ("test", config.test))]
        else:
            from .tasks import adding_problem

            # fixed data sets, the same for every trial: differences come from the variants
            splits = [adding_problem(n, config.length, seed=seed) for n, seed in
                      ((config.train, 1), (config.valid, 2), (config.test, 3))]
        _DATA[key] = tuple(splits)
    return _DATA[key]


def _config(task, size):
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    return SIZES[size][task]


def _model_and_loss(task, cell, hidden_size, seed):
    from .models import SequenceModel
    from .nn import MSELoss

    if task == "jsb":
        from .study_data import NUM_PITCHES

        model = SequenceModel(cell, hidden_size, NUM_PITCHES, input_size=NUM_PITCHES, readout="every",
                              dtype=np.float32, seed=seed)
        return model, BernoulliNLL()
    model = SequenceModel(cell, hidden_size, 1, input_size=2, readout="last", dtype=np.float32, seed=seed)
    return model, MSELoss()


# -- one trial (runs on a Dask worker, or in the driver with scheduler="inline") -------------------
def run_trial(task, variant, params, seed, size="small"):
    """Train one model with one hyper-parameter set; return its losses and where it ran.

    SGD with momentum on minibatches; Gaussian noise of std ``input_noise`` on the
    training inputs; the validation loss after every epoch; early stopping after
    ``patience`` epochs without improvement; the test loss of the parameters with
    the best validation loss (Greff et al. do the same). A run whose loss becomes
    NaN or inf stops there and keeps its best parameters so far (which may be the
    initial ones: the validation loss is measured before training too).
    """
    from .optim import SGD

    started = time.perf_counter()
    config = _config(task, size)
    missing = [name for name in SEARCH_SPACE if name not in params]
    if missing:
        raise ValueError(f"params: missing {missing}")
    train, valid, test = task_data(task, size)
    model_seed, order_seed = np.random.SeedSequence(seed).spawn(2)
    model, loss = _model_and_loss(task, variant_cell(variant), int(params["hidden_size"]), model_seed)
    optimizer = SGD(model.params, lr=float(params["learning_rate"]),
                    momentum=1.0 - float(params["one_minus_momentum"]))
    noise = float(params["input_noise"])
    rng = np.random.default_rng(order_seed)

    # a diverging run overflows on its way to NaN: that is detected below, not warned about
    with np.errstate(over="ignore", invalid="ignore"):
        return _train(model, loss, optimizer, noise, rng, config, train, valid, test, started)


def _trimmed(batch):
    """A minibatch of padded sequences cut to its own longest sequence."""
    if batch.get("lengths") is None:
        return batch
    steps = int(batch["lengths"].max())
    return {k: (v[:, :steps] if k in ("inputs", "targets", "mask") and np.ndim(v) >= 2 else v)
            for k, v in batch.items()}


def _train(model, loss, optimizer, noise, rng, config, train, valid, test, started):
    from .train import evaluate, take_batch

    rows = len(train["inputs"])
    best_valid = evaluate(model, loss, valid)["loss"]
    best_params = {k: v.copy() for k, v in model.params.items()}
    best_epoch, epochs_run, diverged, waited = 0, 0, False, 0
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(rows)
        for start in range(0, rows, config.batch_size):
            batch = _trimmed(take_batch(train, order[start:start + config.batch_size]))
            inputs = batch["inputs"]
            if noise > 0:
                inputs = inputs + rng.normal(0.0, noise, inputs.shape).astype(inputs.dtype)
            predictions = model.forward(inputs, batch.get("lengths"))
            value = loss.forward(predictions, batch["targets"], batch.get("mask"))
            if not math.isfinite(value):
                diverged = True
                break
            model.backward(loss.backward(), input_gradient=False)    # the data's gradient: never read
            if not all(np.all(np.isfinite(g)) for g in model.grads.values()):
                diverged = True
                break
            optimizer.step(model.grads)
        epochs_run = epoch
        if diverged:
            break
        valid_loss = evaluate(model, loss, valid)["loss"]
        if math.isfinite(valid_loss) and valid_loss < best_valid:
            best_valid, best_epoch, waited = valid_loss, epoch, 0
            best_params = {k: v.copy() for k, v in model.params.items()}
        else:
            waited += 1
            if not math.isfinite(valid_loss):
                diverged = True
                break
            if waited >= config.patience:
                break
    model.load_state_dict(best_params)
    test_loss = evaluate(model, loss, test)["loss"]
    return {"test_loss": float(test_loss), "valid_loss": float(best_valid), "best_epoch": best_epoch,
            "epochs": epochs_run, "diverged": diverged, "seconds": time.perf_counter() - started,
            "pid": os.getpid(), "host": socket.gethostname()}


def precompile(variants, task="jsb"):
    """Compile every variant's kernels once (float32, the study's dtype) into the shared caches.

    Numba's on-disk cache ($NUMBA_CACHE_DIR, or beside each kernel file) and lstmkit's
    generated user-cell kernels ($LSTMKIT_CACHE_DIR) then serve every worker on the machine.
    """
    for name in variants:
        model, loss = _model_and_loss(task if task == "adding" else "adding", variant_cell(name), 3, 0)
        x = np.zeros((2, 3, 2), np.float32)
        prediction = model.forward(x, np.array([3, 2]))
        loss.forward(prediction, np.zeros_like(prediction))
        model.backward(loss.backward())
        model.predict(x)


def cache_environment():
    """The variables workers need so they share this machine's kernel caches: the directory of
    the generated user-cell kernels, and Numba's cache directory when one is set (otherwise
    Numba caches beside each kernel file, which every process on the machine finds the same way)."""
    from .codegen import user_cache_dir

    environment = {"LSTMKIT_CACHE_DIR": str(user_cache_dir().parent),
                   "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    if os.environ.get("NUMBA_CACHE_DIR"):
        environment["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
    return environment


# -- storage and the driver -------------------------------------------------------------------------
def open_storage(path):
    """Optuna storage from a path: ``*.db``/``*.sqlite`` → SQLite, a database URL as is,
    anything else → a journal file (append-only, safe to interrupt)."""
    import optuna

    text = str(path)
    if "://" in text:
        return text
    if text.endswith((".db", ".sqlite", ".sqlite3")):
        return f"sqlite:///{Path(text).resolve()}"
    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(text))


def _open_study(storage, task, size, seed, variants, create=True):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = {"task": task, "size": size, "seed": seed, "config": _config(task, size).as_dict(),
                "search_space": {k: list(v) for k, v in SEARCH_SPACE.items()}}
    storage = open_storage(storage) if isinstance(storage, (str, os.PathLike)) else storage
    if not create:
        return optuna.load_study(study_name=task, storage=storage)
    study = optuna.create_study(study_name=task, storage=storage, direction="minimize",
                                load_if_exists=True)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != settings:
        changed = sorted(k for k in settings if stored.get(k) != settings[k])
        raise ValueError(f"study {task!r} in this storage was run with other settings ({', '.join(changed)}: "
                         f"{[stored.get(k) for k in changed]}); use another storage file or the same options")
    return study


def _trial_seed(seed, number):
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class _Inline:
    """The driver's own process as the executor: a single-process baseline with the same loop."""

    dashboard_link = None

    def submit(self, function, *args, **kwargs):
        kwargs.pop("key", None)
        kwargs.pop("pure", None)
        return function(*args, **kwargs)


def _executor(scheduler, workers):
    """(client, cluster or None) for scheduler 'local', 'inline' or 'tcp://host:port'."""
    if scheduler == "inline":
        return _Inline(), None
    import logging

    from dask.distributed import Client, LocalCluster

    if scheduler in (None, "local"):
        workers = workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address="127.0.0.1:0",
                               silence_logs=logging.ERROR, env=cache_environment())
        return Client(cluster), cluster
    if not str(scheduler).startswith(("tcp://", "tls://", "inproc://", "ws://")):
        raise ValueError(f"scheduler: expected 'local', 'inline' or an address like tcp://127.0.0.1:8786, "
                         f"got {scheduler!r}")
    return Client(scheduler, timeout=30), None


def run_study(task, storage, *, trials_per_variant, variants=None, size="small", seed=0,
              scheduler="local", workers=None, client=None, progress=True, command=None):
    """Run (or resume) the study of ``task`` until every variant has ``trials_per_variant``
    finished trials; return the Optuna study.

    ``scheduler``: ``"local"`` (an embedded LocalCluster of ``workers`` processes, default one
    per core), ``"tcp://host:port"`` (an existing Dask cluster), or ``"inline"`` (no Dask:
    trials run one after another in this process). ``client``: a ``dask.distributed.Client``
    to use instead (the caller owns it).

    Only this function writes the storage. Trials left RUNNING by an interrupted driver are
    marked FAIL and asked again with the same hyper-parameters.
    """
    import optuna
    from optuna.trial import TrialState

    variants = list(VARIANTS) if variants is None else list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or len(set(variants)) != len(variants):
        raise ValueError(f"variants: expected distinct names from {list(VARIANTS)}, got {variants}")
    if not isinstance(trials_per_variant, int) or trials_per_variant < 1:
        raise ValueError(f"trials_per_variant must be a positive integer, got {trials_per_variant!r}")
    _config(task, size)
    study = _open_study(storage, task, size, seed, variants)
    distributions = _distributions(variants)

    # an interrupted driver left these RUNNING: ask again with the same parameters
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if stale.state == TrialState.RUNNING:
            study._storage.set_trial_user_attr(stale._trial_id, "interrupted", True)
            study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
            study.enqueue_trial(stale.params, user_attrs={"rerun_of": stale.number})
    done = {v: 0 for v in variants}
    for finished in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if finished.params.get("variant") in done:
            done[finished.params["variant"]] += 1
    # round-robin over variants, so an interrupted study is balanced at every moment
    plan = []
    for round_ in range(trials_per_variant):
        plan += [v for v in variants if done[v] <= round_]
    waiting = []
    for rerun in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        variant = rerun.system_attrs.get("fixed_params", {}).get("variant")   # enqueue_trial's values
        if variant in plan:                          # reruns go first, with their own variant
            plan.remove(variant)
            plan.insert(len(waiting), variant)
            waiting.append(variant)
        else:                                        # no longer needed (e.g. fewer trials asked for)
            study._storage.set_trial_state_values(rerun._trial_id, TrialState.FAIL)
    study.sampler = optuna.samplers.RandomSampler(seed=_trial_seed(seed, len(study.trials)))

    own_client = client is None
    cluster = None
    if own_client:
        precompile(variants)                     # once per machine: workers load the cached kernels
        client, cluster = _executor(scheduler, workers)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), desc=f"{task}: finished trials", unit="trial")
        link = getattr(client, "dashboard_link", None)
        if link:
            bar.write(f"Dask dashboard: {link}")
    started = time.time()
    try:
        _drive(study, client, task, size, seed, plan, waiting, distributions, bar)
    finally:
        if bar is not None:
            bar.close()
        sessions = list(study.user_attrs.get("sessions", []))
        nthreads = (sum(client.nthreads().values()) if hasattr(client, "nthreads") else 1)
        sessions.append({"command": command, "scheduler": "inline" if isinstance(client, _Inline) else
                         str(getattr(client, "scheduler", None) and client.scheduler.address),
                         "workers": nthreads, "cores": os.cpu_count(), "machine": platform.machine(),
                         "python": sys.version.split()[0], "trials": len(plan),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                         "wall_seconds": round(time.time() - started, 1)})
        study.set_user_attr("sessions", sessions)
        if own_client and cluster is not None:
            client.close()
            cluster.close()
        elif own_client and hasattr(client, "close"):
            client.close()
    return study


def _suggest(trial, distributions):
    """Draw (or, for enqueued values, take) every parameter of a trial."""
    params = {"variant": trial.suggest_categorical("variant", distributions["variant"].choices)}
    for name, (kind, low, high, log) in SEARCH_SPACE.items():
        suggest = trial.suggest_int if kind == "int" else trial.suggest_float
        params[name] = suggest(name, low, high, log=log)
    return params


def _drive(study, client, task, size, seed, plan, waiting, distributions, bar):
    """Ask, submit, tell: at most (worker threads + 1) trials in flight."""
    import uuid

    from optuna.trial import TrialState

    inline = isinstance(client, _Inline)
    capacity = 1 if inline else max(1, sum(client.nthreads().values())) + 1
    pending = list(plan)
    in_flight = {}                 # future → trial

    def launch():
        variant = pending.pop(0)
        if waiting and waiting[0] == variant:
            waiting.pop(0)                           # a rerun: ask() returns its enqueued parameters
        else:
            study.enqueue_trial({"variant": variant})
        trial = study.ask()
        params = _suggest(trial, distributions)
        trial_seed = _trial_seed(seed, trial.number)
        trial.set_user_attr("seed", trial_seed)
        key = f"trial-{task}-{params['variant']}-{trial.number}-{uuid.uuid4().hex[:8]}"
        future = client.submit(run_trial, task, params["variant"], params, trial_seed, size, key=key,
                               pure=False)
        in_flight[key] = (future, trial)

    def record(trial, result=None, error=None):
        if error is not None:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
            study.tell(trial, state=TrialState.FAIL)
        else:
            for name in ("valid_loss", "best_epoch", "epochs", "diverged", "seconds", "pid", "host"):
                trial.set_user_attr(name, result[name])
            study.tell(trial, result["test_loss"])
        if bar is not None:
            bar.update(1)
            finished = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            if finished:
                bar.set_postfix(best=f"{min(finished):.4g}")

    if inline:
        while pending:
            launch()
            _, (result, trial) = in_flight.popitem()
            record(trial, result)
        return
    from dask.distributed import as_completed

    while pending and len(in_flight) < capacity:
        launch()
    completed = as_completed([f for f, _ in in_flight.values()], with_results=False)
    for future in completed:
        _, trial = in_flight.pop(future.key)
        try:
            result = future.result()
        except Exception as error:          # the trial raised, or its worker died too often (KilledWorker)
            record(trial, error=error)
        else:
            record(trial, result)
        while pending and len(in_flight) < capacity:
            launch()
            completed.add(next(reversed(in_flight.values()))[0])


# -- results: from storage or the committed JSON --------------------------------------------------
def study_records(study):
    """One dict per finished trial: number, variant, hyper-parameters, test loss and the rest."""
    from optuna.trial import TrialState

    records = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = {"number": trial.number, "test_loss": trial.value, **trial.params}
        record.update({k: v for k, v in trial.user_attrs.items() if k not in ("rerun_of",)})
        records.append(record)
    return records


def export_json(storage, path, tasks=TASKS, command=None):
    """Write every task's finished trials and sessions in ``storage`` to one JSON file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage) if isinstance(storage, (str, os.PathLike)) else storage
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    document = {"format": "lstmkit-study-1", "command": command, "tasks": {}}
    for task in tasks:
        if task not in names:
            continue
        study = optuna.load_study(study_name=task, storage=storage)
        document["tasks"][task] = {"settings": study.user_attrs.get("settings"),
                                   "sessions": study.user_attrs.get("sessions", []),
                                   "trials": study_records(study)}
    if not document["tasks"]:
        raise ValueError(f"no study of {list(tasks)} in this storage (it holds {sorted(names)})")
    Path(path).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return document


def load_json(path):
    """The document :func:`export_json` wrote (plain JSON, nothing unpickled)."""
    document = json.loads(Path(path).read_text())
    if document.get("format") != "lstmkit-study-1":
        raise ValueError(f"{path}: not an lstmkit study export (format {document.get('format')!r})")
    return document


def _by_variant(records, variants=None):
    order = variants or [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    return {v: np.array(sorted(r["test_loss"] for r in records if r["variant"] == v)) for v in order}


def best_fraction(losses, fraction=0.1, minimum=3):
    """The best ``fraction`` of a sorted loss array, at least ``minimum`` values."""
    losses = np.sort(np.asarray(losses))
    return losses[:max(minimum, int(math.ceil(fraction * len(losses))))]


def summary_table(records, reference=REFERENCE_VARIANT, fraction=0.1, alpha=0.05):
    """Per variant: trials, median and best test loss, mean of the best ``fraction``, and
    Welch's t-test of all its trials against ``reference`` (t > 0: worse than the reference).
    """
    from scipy import stats

    groups = _by_variant(records)
    if reference not in groups:
        raise ValueError(f"the reference variant {reference!r} has no finished trials")
    rows = []
    for name, losses in groups.items():
        row = {"variant": name, "trials": int(len(losses)), "median": float(np.median(losses)),
               "best": float(losses.min()), "best_mean": float(best_fraction(losses, fraction).mean()),
               "reference": name == reference}
        if name != reference and len(losses) > 1:
            test = stats.ttest_ind(losses, groups[reference], equal_var=False)
            row.update(t=float(test.statistic), p=float(test.pvalue),
                       verdict=("worse" if test.statistic > 0 else "better") if test.pvalue < alpha else "same")
            best = stats.ttest_ind(best_fraction(losses, fraction), best_fraction(groups[reference], fraction),
                                   equal_var=False)
            row.update(t_best=float(best.statistic), p_best=float(best.pvalue))
        rows.append(row)
    return rows


def format_table(rows):
    lines = [f"{'variant':<8}{'trials':>7}{'median':>10}{'best':>10}{'best 10%':>10}{'t vs V':>8}{'p':>9}  verdict"]
    for r in rows:
        if "t" in r:
            tail = f"{r['t']:>8.2f}{r['p']:>9.3g}  {r['verdict']}"
        else:
            tail = f"{'':>8}{'':>9}  " + ("reference" if r.get("reference") else "too few trials")
        lines.append(f"{r['variant']:<8}{r['trials']:>7}{r['median']:>10.4g}{r['best']:>10.4g}"
                     f"{r['best_mean']:>10.4g}{tail}")
    return "\n".join(lines)


def fanova_importances(records, seed=0, params=None):
    """fANOVA importance of each hyper-parameter (and of the variant) for the test loss,
    Optuna's ``FanovaImportanceEvaluator`` on an in-memory study rebuilt from ``records``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    distributions = _distributions(variants)
    study = optuna.create_study(direction="minimize")
    study.add_trials([optuna.trial.create_trial(params={k: r[k] for k in distributions},
                                                distributions=distributions, value=r["test_loss"])
                      for r in records])
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator, params=params)
    return {name: float(value) for name, value in importances.items()}


# -- plots (labels are arguments, so a chapter can pass its language's) -----------------------------
def plot_boxes(records, ax_all, ax_best, fraction=0.1, ylabel="test loss", title_all="all trials",
               title_best="best 10 %"):
    groups = _by_variant(records)
    names = list(groups)
    ax_all.boxplot([groups[n] for n in names], tick_labels=names)
    ax_best.boxplot([best_fraction(groups[n], fraction) for n in names], tick_labels=names)
    for ax, title in ((ax_all, title_all), (ax_best, title_best)):
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", rotation=45)


def plot_learning_rate(records, ax, xlabel="learning rate", ylabel="test loss", title=None):
    import matplotlib.pyplot as plt

    groups = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    colors = plt.get_cmap("tab10")
    for k, name in enumerate(groups):
        points = sorted((r["learning_rate"], r["test_loss"]) for r in records if r["variant"] == name)
        ax.scatter(*zip(*points), s=12, color=colors(k % 10), label=name, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, ncol=3)
