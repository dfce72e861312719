"""Each optimizer against torch.optim on the same gradients; clipping against torch.nn.utils."""
import numpy as np
import pytest
import torch

from lstmkit.optim import SGD, Adagrad, Adam, AdamW, RMSprop, clip_grad_norm, clip_grad_value, global_norm

SHAPES = {"weight": (4, 3), "bias": (4,), "scale": (2, 2, 2)}


def run_both(ours_class, torch_class, options, steps=6, dtype=np.float64, seed=0):
    """Same start, same gradient sequence into both; returns (ours, torch's) parameters after each step."""
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}
    torch_params = {name: torch.tensor(value.copy(), requires_grad=True) for name, value in params.items()}
    ours = ours_class(params, **options)
    theirs = torch_class(list(torch_params.values()), **options)
    history = []
    for step in range(steps):
        grads = {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}
        if step == 2:
            grads["bias"][:] = 0.0              # a zero gradient must not break anything
        for name, p in torch_params.items():
            p.grad = torch.tensor(grads[name].copy())
        ours.step(grads)
        theirs.step()
        history.append(({k: v.copy() for k, v in params.items()},
                        {k: p.detach().numpy().copy() for k, p in torch_params.items()}))
    return history, ours


CONFIGS = [
    (SGD, torch.optim.SGD, {"lr": 0.1}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 1e-2}),
    (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    (Adam, torch.optim.Adam, {"lr": 1e-2}),
    (Adam, torch.optim.Adam, {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    (Adagrad, torch.optim.Adagrad, {"lr": 0.1}),
    (Adagrad, torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.1,
                                    "weight_decay": 0.01, "eps": 1e-8}),
    (AdamW, torch.optim.AdamW, {"lr": 1e-2}),
    (AdamW, torch.optim.AdamW, {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.3}),
    (RMSprop, torch.optim.RMSprop, {"lr": 1e-2}),
    (RMSprop, torch.optim.RMSprop, {"lr": 1e-2, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.05, "momentum": 0.8}),
    (RMSprop, torch.optim.RMSprop, {"lr": 5e-3, "centered": True, "momentum": 0.5}),
]


@pytest.mark.parametrize("ours,theirs,options", CONFIGS,
                         ids=[f"{c[0].__name__}-{k}" for k, c in enumerate(CONFIGS)])
def test_update_matches_torch_float64(ours, theirs, options):
    history, _ = run_both(ours, theirs, options)
    for step, (mine, reference) in enumerate(history):
        for name in mine:
            np.testing.assert_allclose(mine[name], reference[name], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name} after step {step + 1}")


@pytest.mark.parametrize("ours,theirs,options", CONFIGS[1:2] + CONFIGS[4:5] + CONFIGS[6:7] + CONFIGS[9:10]
                         + CONFIGS[12:13])
def test_update_matches_torch_float32(ours, theirs, options):
    history, optimizer = run_both(ours, theirs, options, dtype=np.float32)
    for mine, reference in history:
        for name in mine:
            assert mine[name].dtype == np.float32
            np.testing.assert_allclose(mine[name], reference[name], rtol=1e-5, atol=1e-6)
    for buffers in optimizer.state.values():
        assert all(value.dtype == np.float32 for value in buffers.values())


def test_a_bad_step_changes_nothing():
    params = {"w": np.ones(3), "b": np.ones(2)}
    optimizer = Adam(params, lr=0.1)
    with pytest.raises(KeyError, match="missing"):
        optimizer.step({"w": np.ones(3)})
    with pytest.raises(ValueError, match=r"\(2,\)"):
        optimizer.step({"w": np.ones(3), "b": np.ones(3)})
    with pytest.raises(FloatingPointError, match="NaN"):
        optimizer.step({"w": np.ones(3), "b": np.array([1.0, np.nan])})
    assert optimizer.step_count == 0 and optimizer.state == {"exp_avg": {}, "exp_avg_sq": {}}
    np.testing.assert_array_equal(params["w"], np.ones(3))


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(1)
    grads = {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}
    tensors = [torch.zeros(shape, dtype=torch.float64, requires_grad=True) for shape in SHAPES.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    norm_t = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    norm = clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(norm_t.item(), rel=1e-12)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)
    assert global_norm(grads) == pytest.approx(min(max_norm, norm), rel=1e-5)


def test_clip_grad_value_matches_torch():
    rng = np.random.default_rng(2)
    grads = {name: 10 * rng.standard_normal(shape) for name, shape in SHAPES.items()}
    tensors = [torch.zeros(shape, dtype=torch.float64, requires_grad=True) for shape in SHAPES.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_value_(tensors, 5.0)
    clip_grad_value(grads, 5.0)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_array_equal(g, t.grad.numpy())


def test_state_dict_round_trip_continues_identically():
    history, optimizer = run_both(Adam, torch.optim.Adam, {"lr": 1e-2}, steps=3)
    state = optimizer.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    params_copy = {k: v.copy() for k, v in optimizer.params.items()}
    fresh = Adam(params_copy, lr=0.5)
    fresh.load_state_dict(state)
    assert fresh.lr == 1e-2 and fresh.step_count == 3
    grads = {name: np.full(shape, 0.3) for name, shape in SHAPES.items()}
    optimizer.step(grads)
    fresh.step(grads)
    for name in params_copy:
        np.testing.assert_array_equal(params_copy[name], optimizer.params[name])
    bad = dict(state)
    bad["exp_avg.weight"] = np.zeros((2, 2))
    before = fresh.state_dict()
    with pytest.raises(ValueError, match="exp_avg.weight"):
        fresh.load_state_dict(bad)
    after = fresh.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


# -- issue 11: NaN settings, and a step that checks every gradient before it changes anything ----
@pytest.mark.parametrize("optimizer_class,setting", [
    (SGD, "lr"), (SGD, "momentum"), (SGD, "dampening"), (SGD, "weight_decay"),
    (Adam, "lr"), (Adam, "eps"), (Adam, "weight_decay"),
    (Adagrad, "lr"), (Adagrad, "lr_decay"), (Adagrad, "eps"), (Adagrad, "weight_decay"),
    (Adagrad, "initial_accumulator_value"),
    (AdamW, "lr"), (AdamW, "weight_decay"),
    (RMSprop, "lr"), (RMSprop, "alpha"), (RMSprop, "eps"), (RMSprop, "weight_decay"), (RMSprop, "momentum"),
])
def test_a_nan_setting_is_refused(optimizer_class, setting):
    with pytest.raises(ValueError, match=f"{setting} must be a finite number"):
        optimizer_class({"w": np.ones(3)}, **{setting: float("nan")})


@pytest.mark.parametrize("betas", [(float("nan"), 0.999), (0.9, float("nan")), (0.9, 1.0)])
def test_adam_refuses_nan_or_out_of_range_betas(betas):
    with pytest.raises(ValueError, match="betas"):
        Adam({"w": np.ones(3)}, betas=betas)


@pytest.mark.parametrize("bad_grad", [
    np.ones(2, np.complex128),              # a complex gradient (numpy's in-place update would raise)
    np.ones(2, np.float32),                 # another float type than the parameter's
])
@pytest.mark.parametrize("optimizer_class", [SGD, Adam, AdamW, RMSprop, Adagrad])
def test_a_bad_gradient_anywhere_changes_no_parameter(optimizer_class, bad_grad):
    """Six parameters, the last one's gradient bad: step raises before the first update."""
    params = {f"p{k}": np.full(2, float(k)) for k in range(6)}
    before = {k: v.copy() for k, v in params.items()}
    optimizer = optimizer_class(params, lr=0.1)
    grads = {k: np.ones(2) for k in params}
    grads["p5"] = bad_grad
    with pytest.raises(TypeError, match=r"grads\['p5'\]: expected dtype float64"):
        optimizer.step(grads)
    for name, value in params.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert optimizer.step_count == 0 and all(not buffers for buffers in optimizer.state.values())


@pytest.mark.parametrize("ours,theirs,options", [CONFIGS[9], CONFIGS[12]], ids=["AdamW", "RMSprop-centered"])
def test_state_dict_round_trip_of_adamw_and_rmsprop(ours, theirs, options):
    history, optimizer = run_both(ours, theirs, options, steps=3)
    params_copy = {k: v.copy() for k, v in optimizer.params.items()}
    fresh = ours(params_copy)
    fresh.load_state_dict(optimizer.state_dict())
    grads = {name: np.full(shape, 0.3) for name, shape in SHAPES.items()}
    optimizer.step(grads)
    fresh.step(grads)
    for name in params_copy:
        np.testing.assert_array_equal(params_copy[name], optimizer.params[name])
