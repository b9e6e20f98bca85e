"""`fused_cpu_ops` on Llama, Mistral and Qwen2 against the models' own forward and backward, and what
it changes: the model's module instances for the duration of the context, never their classes. The
ops themselves are checked against float64 in test_kernels_rms_norm and test_kernels_silu_mul."""

from __future__ import annotations

import pytest
import torch
import transformers

from reversalkit._ext import has_native
from reversalkit.train.cpu_ops import fused_cpu_ops

pytestmark = pytest.mark.skipif(not has_native(), reason="reversalkit._C is not built")


def test_mlp_under_cpu_autocast_takes_the_models_path():
    """Autocast makes the gate/up projections bf16 from float32 input: those must not reach the kernel."""
    model = _model("llama")
    ids = torch.randint(1, 61, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hf = model(input_ids=ids).logits
        with fused_cpu_ops(model):
            fused = model(input_ids=ids).logits
    torch.testing.assert_close(fused, hf, rtol=2e-2, atol=2e-2)


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
    import reversalkit.kernels.rms_norm as rms_norm_module

    model = _model("llama")
    ids = torch.randint(1, 61, (2, 9), generator=torch.Generator().manual_seed(2))
    calls = []
    real = rms_norm_module.RMSNormFunction.apply
    monkeypatch.setattr(rms_norm_module.RMSNormFunction, "apply", lambda *a: calls.append(1) or real(*a))
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


def test_fused_ops_change_only_the_models_instances_and_restore_them_on_error():
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

    classes = {cls: cls.forward for cls in (LlamaRMSNorm, LlamaMLP)}
    model, other = _model("llama"), _model("llama")
    with pytest.raises(RuntimeError, match="inside"):
        with fused_cpu_ops(model) as switched:
            assert switched == 2 * 2 + 1 + 2
            assert all(cls.forward is f for cls, f in classes.items())  # the classes are untouched
            assert not any("forward" in vars(m) for m in other.modules())  # and so is another model
            raise RuntimeError("inside")
    assert not any("forward" in vars(m) for m in model.modules())
