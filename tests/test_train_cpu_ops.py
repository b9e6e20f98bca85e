"""Fused CPU RMSNorm and SwiGLU for training: the kernels against float64 (forward and every gradient,
the tolerance rule of test_kernels_logprob), and `fused_cpu_ops` on Llama, Mistral and Qwen2 against
the models' own forward and backward."""

from __future__ import annotations

import pytest
import torch
import transformers
from test_kernels_logprob import assert_within_torch_error

from reversalkit._ext import has_native
from reversalkit.train.cpu_ops import fused_cpu_ops, rms_norm, swiglu

pytestmark = pytest.mark.skipif(not has_native(), reason="reversalkit._C is not built")

SHAPES = [(1, 5), (7, 128), (333, 130), (2, 9, 1000)]


def _grads_of(fn, inputs, upstream):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    out.backward(upstream.to(out.dtype))
    return out.detach(), [x.grad for x in leaves]


def _check(name, fused, native, inputs, upstream):
    """fused and native (torch in float32) against native run in float64, output and input gradients."""
    ref_out, ref_grads = _grads_of(native, [x.double() for x in inputs], upstream)
    k_out, k_grads = _grads_of(fused, inputs, upstream)
    t_out, t_grads = _grads_of(native, inputs, upstream)
    assert_within_torch_error(f"{name} forward", k_out, t_out, ref_out, torch.float32)
    for i, (k, t, r) in enumerate(zip(k_grads, t_grads, ref_grads, strict=True)):
        assert_within_torch_error(f"{name} grad of input {i}", k, t, r, torch.float32)


def _hf_rms_norm(x, w, eps=1e-6):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rms_norm_matches_float64(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen) * 3
    w = 1 + 0.5 * torch.randn(shape[-1], generator=gen)
    upstream = torch.randn(*shape, generator=gen, dtype=torch.float64)
    _check("rms_norm", lambda a, b: rms_norm(a, b, 1e-6), _hf_rms_norm, [x, w], upstream)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_swiglu_matches_float64(shape):
    gen = torch.Generator().manual_seed(sum(shape) + 1)
    gate = torch.randn(*shape, generator=gen) * 4
    gate.view(-1)[:3] = torch.tensor([-100.0, 100.0, 0.0])[: gate.numel()]  # saturated sigmoid, and zero
    up = torch.randn(*shape, generator=gen)
    upstream = torch.randn(*shape, generator=gen, dtype=torch.float64)
    _check("swiglu", swiglu, lambda g, u: torch.nn.functional.silu(g) * u, [gate, up], upstream)


def test_rms_norm_splits_rows_over_threads():
    """Enough rows for 3 threads (uneven ranges): each range's weight-gradient share is summed once."""
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(601, 256, generator=gen), 1 + 0.5 * torch.randn(256, generator=gen)
    upstream = torch.randn(601, 256, generator=gen, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        _check("rms_norm, 3 threads", lambda a, b: rms_norm(a, b, 1e-6), _hf_rms_norm, [x, w], upstream)
        silu_mul = lambda g, u: torch.nn.functional.silu(g) * u  # noqa: E731
        _check("swiglu, 3 threads", swiglu, silu_mul, [x, w.expand(601, 256)], upstream)
    finally:
        torch.set_num_threads(before)


def test_other_dtypes_and_devices_are_refused_with_the_way_out():
    with pytest.raises(ValueError, match="float32 CPU tensors, got torch.bfloat16"):
        swiglu(torch.zeros(2, 3, dtype=torch.bfloat16), torch.zeros(2, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="float32 CPU tensors, got torch.float64"):
        rms_norm(torch.zeros(2, 3, dtype=torch.float64), torch.ones(3), 1e-6)


def test_mlp_under_cpu_autocast_takes_the_models_path():
    """Autocast makes the gate/up projections bf16 from float32 input: those must not reach the kernel."""
    model = _model("llama")
    ids = torch.randint(1, 61, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hf = model(input_ids=ids).logits
        with fused_cpu_ops(model):
            fused = model(input_ids=ids).logits
    torch.testing.assert_close(fused, hf, rtol=2e-2, atol=2e-2)


def test_shape_mismatches_name_the_shapes():
    with pytest.raises(ValueError, match=r"weight \(4,\) does not match"):
        rms_norm(torch.zeros(2, 3), torch.ones(4), 1e-6)
    with pytest.raises(ValueError, match=r"gate \(2, 3\) and up \(2, 4\)"):
        swiglu(torch.zeros(2, 3), torch.zeros(2, 4))


COMMON = dict(vocab_size=61, hidden_size=40, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)


ARCHS = {"llama": ("Llama", {}), "mistral": ("Mistral", {"sliding_window": 9}), "qwen2": ("Qwen2", {})}


def _model(kind: str):
    torch.manual_seed(0)
    prefix, extra = ARCHS[kind]
    config = getattr(transformers, f"{prefix}Config")(**COMMON, **extra)
    m = getattr(transformers, f"{prefix}ForCausalLM")(config)
    with torch.no_grad():  # norms start at 1 in transformers: make their weights matter
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.5)
    return m


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
def test_fused_ops_reproduce_the_model_and_restore_it(kind, one_thread):
    model = _model(kind)
    ids = torch.randint(1, 61, (3, 17), generator=torch.Generator().manual_seed(1))
    hf_loss, hf_grads = _loss_and_grads(model, ids)
    with fused_cpu_ops(model) as switched:
        assert switched == 2 * 2 + 1 + 2  # two norms per layer, the final norm, one MLP per layer
        fused = [m for m in model.modules() if type(m).__name__.endswith(("RMSNorm", "MLP"))]
        assert all("forward" in vars(m) for m in fused)
        loss, grads = _loss_and_grads(model, ids)
    assert not any("forward" in vars(m) for m in model.modules())  # restored
    torch.testing.assert_close(loss, hf_loss, rtol=1e-6, atol=0)
    for name, g in grads.items():
        torch.testing.assert_close(g, hf_grads[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    again, _ = _loss_and_grads(model, ids)
    assert torch.equal(again, hf_loss)  # the model's own forward is back


def test_fused_ops_use_the_kernels_inside_and_leave_other_inputs_to_the_model(monkeypatch):
    import reversalkit.train.cpu_ops as cpu_ops

    model = _model("llama")
    ids = torch.randint(1, 61, (2, 9), generator=torch.Generator().manual_seed(2))
    calls = []
    real = cpu_ops.RMSNormFunction.apply
    monkeypatch.setattr(cpu_ops.RMSNormFunction, "apply", lambda *a: calls.append(1) or real(*a))
    with fused_cpu_ops(model):
        model(input_ids=ids)
        assert len(calls) == 2 * 2 + 1
        with torch.no_grad():
            bf16 = model.to(torch.bfloat16)(input_ids=ids).logits  # not float32: the model's own forward
        assert len(calls) == 2 * 2 + 1
    with torch.no_grad():
        assert torch.equal(bf16, model(input_ids=ids).logits)
    with fused_cpu_ops(model, enabled=False) as switched:
        assert switched == 0
