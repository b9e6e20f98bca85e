"""kernels/paged_decode.py: decode attention in both KV layouts, every path against a float64 oracle.

paged_decode: the torch reference against dense attention, the Triton kernel (Triton's interpreter
on CPU) against the reference. row_decode: the C++ entry and the torch reference against a float64
per-sequence oracle, over odd shapes, GQA group sizes 1-8, windows (lo > 0), a shared prefix and
sample groups; and the C++ entry's argument checks (a wrong call raises ValueError naming the
argument). Tolerances: fp32 paths within 2x the fp32 torch reference's own error plus a floor.
"""

import math

import numpy as np
import pytest
import torch
from reversalkit.kernels.paged_decode import (
    paged_decode,
    paged_decode_reference,
    row_decode,
    row_decode_reference,
)

from reversalkit._ext import native

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def dense_attention(q, k, v, scale, window=None):
    """q: (H, D) one query at the last position; k, v: (L, Hkv, D) -> (H, D), in float64."""
    H, D = q.shape
    L, Hkv, _ = k.shape
    k = k.double().repeat_interleave(H // Hkv, 1)
    v = v.double().repeat_interleave(H // Hkv, 1)
    s = torch.einsum("hd,lhd->hl", q.double(), k) * scale
    if window is not None:
        s[:, : max(0, L - window)] = -math.inf
    return torch.einsum("hl,lhd->hd", s.softmax(-1), v)


def random_paged(B, H, Hkv, D, bs, lens, num_blocks, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    kc = torch.randn(num_blocks, bs, Hkv, D, generator=g).to(dtype)
    vc = torch.randn(num_blocks, bs, Hkv, D, generator=g).to(dtype)
    max_blocks = max(-(-n // bs) for n in lens)
    bt = torch.randperm(num_blocks, generator=g)[: B * max_blocks].view(B, max_blocks).int()
    q = torch.randn(B, H, D, generator=g).to(dtype)
    return q, kc, vc, bt, torch.tensor(lens, dtype=torch.int32)


def dense_from_paged(kc, bt_row, n):
    bs = kc.shape[1]
    pos = torch.arange(n)
    return kc[bt_row.long()[pos // bs], pos % bs]  # (n, Hkv, D)


@pytest.mark.parametrize("B,H,Hkv,D,bs,lens,window", [
    (3, 4, 2, 32, 16, [1, 37, 64], None),
    (4, 6, 2, 24, 8, [5, 9, 8, 30], 7),  # odd head dim, window, block boundaries
    (2, 4, 4, 16, 4, [17, 3], None),  # no GQA
])
def test_paged_reference_matches_dense(B, H, Hkv, D, bs, lens, window):
    q, kc, vc, bt, cl = random_paged(B, H, Hkv, D, bs, lens, num_blocks=64, dtype=torch.float64)
    out = paged_decode_reference(q, kc, vc, bt, cl, D ** -0.5, window)
    for b in range(B):
        k, v = dense_from_paged(kc, bt[b], lens[b]), dense_from_paged(vc, bt[b], lens[b])
        want = dense_attention(q[b], k, v, D ** -0.5, window)
        torch.testing.assert_close(out[b], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("B,H,Hkv,D,bs,lens,window", [
    (3, 4, 2, 32, 16, [1, 37, 70], None),
    (4, 6, 2, 24, 8, [5, 9, 8, 30], 7),
    (2, 8, 1, 16, 4, [17, 3], None),  # 8 query heads on one KV head
])
def test_triton_paged_decode_matches_reference(B, H, Hkv, D, bs, lens, window):
    q, kc, vc, bt, cl = random_paged(B, H, Hkv, D, bs, lens, num_blocks=64, seed=1)
    exact = paged_decode_reference(q.double(), kc.double(), vc.double(), bt, cl, D ** -0.5, window)
    torch_err = (paged_decode_reference(q, kc, vc, bt, cl, D ** -0.5, window).double() - exact).abs().max()
    err = (paged_decode(q, kc, vc, bt, cl, D ** -0.5, window, backend="triton").double() - exact).abs().max()
    assert err <= 2 * torch_err + 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_paged_decode_low_precision(dtype):
    """Error against a float64 reference at most twice that of torch's own path in `dtype`."""
    q, kc, vc, bt, cl = random_paged(3, 8, 2, 32, 16, [3, 40, 17], num_blocks=16, dtype=dtype, seed=2)
    exact = paged_decode_reference(q.double(), kc.double(), vc.double(), bt, cl, 32 ** -0.5)
    torch_err = (paged_decode_reference(q, kc, vc, bt, cl, 32 ** -0.5).double() - exact).abs().max()
    err = (paged_decode(q, kc, vc, bt, cl, 32 ** -0.5, backend="triton").double() - exact).abs().max()
    assert err <= 2 * torch_err + 1e-6


def test_paged_decode_rejects_bad_inputs():
    q, kc, vc, bt, cl = random_paged(2, 4, 2, 16, 4, [3, 5], num_blocks=8)
    with pytest.raises(ValueError, match="int32"):
        paged_decode(q, kc, vc, bt.long(), cl, 0.25, backend="triton")
    with pytest.raises(ValueError, match="does not match"):
        paged_decode(q[..., :8], kc, vc, bt, cl, 0.25)
    assert torch.equal(paged_decode(q, kc, vc, bt, cl, 0.25), paged_decode_reference(q, kc, vc, bt, cl, 0.25))


def random_rows(B, g, Hkv, D, T, lens, Lc=0, groups=None, window=None, seed=0):
    """Inputs of row_decode: row b holds lens[b] tokens before its new one; with groups
    (group of each row, group lengths), row b first attends to its group's tokens; window: only keys
    within `window` positions of the query (prefix, group and row positions run on)."""
    gen = torch.Generator().manual_seed(seed)
    H = g * Hkv
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    q, k, v = r(B, H, D), r(B + 1, Hkv, T, D), r(B + 1, Hkv, T, D)  # one unused row
    new_kv = (r(B, Hkv, D), r(B, Hkv, D))
    hi = torch.tensor(lens) + 1
    grp = torch.full((B,), -1) if groups is None else torch.tensor(groups[0])
    glen = torch.zeros(B, dtype=torch.int64) if groups is None else torch.tensor(groups[1])[grp.clamp(min=0)]
    glen = torch.where(grp >= 0, glen, 0)
    pos = Lc + glen + hi - 1  # the query's position
    first = pos - (window or 10**6) + 1
    lo = (first - Lc - glen).clamp(min=0)
    kw = {"new_kv": new_kv}
    if Lc:
        kw["prefix"] = (r(Hkv, Lc, D), r(Hkv, Lc, D), first.clamp(min=0))
    if groups is not None:
        Gt = max(groups[1]) + 2
        G = len(groups[1])
        group_lo = torch.minimum((first - Lc).clamp(min=0), glen)
        kw["groups"] = (r(G, Hkv, Gt, D), r(G, Hkv, Gt, D), grp, group_lo, glen)
    return q, k, v, lo, hi, kw


def oracle(q, k, v, lo, hi, scale, new_kv, prefix=None, groups=None):
    """Per sequence, in float64: concatenate the keys it attends to and run dense softmax attention."""
    B, H, D = q.shape
    Hkv = k.shape[1]
    out = torch.empty(B, H, D, dtype=torch.float64)
    for b in range(B):
        ks, vs = [], []
        if prefix is not None:
            ks.append(prefix[0][:, prefix[2][b]:])
            vs.append(prefix[1][:, prefix[2][b]:])
        if groups is not None and groups[2][b] >= 0:
            gi, a, e = groups[2][b], groups[3][b], groups[4][b]
            ks.append(groups[0][gi, :, a:e])
            vs.append(groups[1][gi, :, a:e])
        kr, vr = k[b, :, lo[b]:hi[b]].clone(), v[b, :, lo[b]:hi[b]].clone()
        kr[:, -1], vr[:, -1] = new_kv[0][b], new_kv[1][b]
        kk = torch.cat(ks + [kr], 1).transpose(0, 1)  # (L, Hkv, D)
        vv = torch.cat(vs + [vr], 1).transpose(0, 1)
        s = torch.einsum("hd,lhd->hl", q[b].double(), kk.double().repeat_interleave(H // Hkv, 1)) * scale
        out[b] = torch.einsum("hl,lhd->hd", s.softmax(-1), vv.double().repeat_interleave(H // Hkv, 1))
    return out


def _cast(args, kw, dtype):
    q, k, v, lo, hi = args
    c = lambda t: t.to(dtype) if t.is_floating_point() else t  # noqa: E731
    return (c(q), c(k), c(v), lo, hi), {name: tuple(c(t) for t in val) for name, val in kw.items()}


ROW_CASES = {  # B, g, Hkv, D, T, lens, Lc, groups, window
    "avx2 g=1 D=64": (5, 1, 2, 64, 40, [0, 7, 16, 29, 38], 0, None, None),
    "avx2 g=3 prefix": (4, 3, 2, 64, 40, [0, 7, 16, 29], 5, None, None),
    "avx2 g=8 D=32": (4, 8, 2, 32, 40, [3, 8, 17, 30], 3, None, None),
    "scalar D=12 window": (3, 2, 2, 12, 20, [0, 5, 12], 8, None, 5),
    "odd D=9 no GQA": (3, 1, 3, 9, 16, [2, 0, 11], 4, None, None),
    "groups + prefix": (6, 2, 2, 16, 24, [0, 3, 9, 3, 0, 7], 8, ([0, 0, 0, -1, 1, 1], [6, 2]), None),
    "groups + window": (6, 2, 2, 16, 24, [0, 3, 9, 3, 0, 7], 4, ([0, 0, 0, -1, 1, 1], [6, 2]), 4),
}


@pytest.mark.parametrize("case", list(ROW_CASES))
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_row_decode_matches_float64_oracle(case, backend):
    if backend == "cpp":
        assert native() is not None and hasattr(native(), "row_attention_f32"), "build reversalkit._C"
    B, g, Hkv, D, T, lens, Lc, groups, window = ROW_CASES[case]
    q, k, v, lo, hi, kw = random_rows(B, g, Hkv, D, T, lens, Lc, groups, window)
    scale = D ** -0.5
    exact = oracle(q, k, v, lo, hi, scale, **kw)
    ref64 = row_decode_reference(q, k.clone(), v.clone(), lo, hi, scale, **kw)
    assert torch.allclose(ref64, exact, rtol=0, atol=1e-12)
    args32, kw32 = _cast((q, k, v, lo, hi), kw, torch.float32)
    torch_err = (row_decode_reference(*args32, scale, **kw32).double() - exact).abs().max()
    args32, kw32 = _cast((q, k, v, lo, hi), kw, torch.float32)
    got = row_decode(*args32, scale, **kw32, backend=backend)
    assert (got.double() - exact).abs().max() <= 2 * torch_err + 1e-6
    stored = args32[1][torch.arange(B), :, hi - 1]  # the new K landed at row token hi - 1
    assert torch.equal(stored, kw32["new_kv"][0])


def _entry_args(B=3, g=2, Hkv=2, D=16, T=12, with_groups=True):
    q, k, v, lo, hi, kw = random_rows(B, g, Hkv, D, T, [0, 4, 9][:B], 4,
                                      ([0, 0, -1][:B], [3]) if with_groups else None)
    (q, k, v, lo, hi), kw = _cast((q, k, v, lo, hi), kw, torch.float32)
    pk, pv, plo = kw["prefix"]
    scores = torch.randn(Hkv, B, g, pk.shape[1])
    args = dict(q=q.numpy(), k=k.numpy(), v=v.numpy(), lo=lo.numpy(), hi=hi.numpy(),
                out=np.empty((B, g * Hkv, D), dtype=np.float32), scale=0.25, num_threads=1,
                new_kv=tuple(t.numpy() for t in kw["new_kv"]),
                prefix=(scores.numpy(), pv.numpy(), plo.numpy()),
                groups=tuple(t.numpy() for t in kw["groups"]))
    return args


BAD_CALLS = [  # (argument, how to break it, the message)
    ("q", lambda a: a["q"].astype(np.float64), "'q' must be float32"),
    ("k", lambda a: a["k"][:, :, :, :8], "'k' has shape .* dimension 3 must be 16"),
    ("v", lambda a: np.ascontiguousarray(a["v"][:, :1]), "'v' has shape"),
    ("k", lambda a: a["k"].transpose(0, 2, 1, 3), "'k'"),
    ("k", lambda a: np.asfortranarray(a["k"]), "'k' must be contiguous"),
    ("k", lambda a: a["k"][:2], "'k' has 2 rows, fewer than q's B = 3"),
    ("lo", lambda a: a["lo"][:2], "'lo' has shape \\(2,\\) but dimension 0 must be 3"),
    ("hi", lambda a: a["hi"] + 20, "'hi' has .* outside"),
    ("lo", lambda a: a["hi"].copy(), "'lo' has .* outside|'hi' must exceed lo"),
    ("out", lambda a: np.empty((3, 4, 16), dtype=np.float32)[:, ::2], "'out' has shape"),
    ("out", lambda a: np.broadcast_to(a["out"][:1], a["out"].shape), "'out' must be"),
    ("new_kv", lambda a: a["new_kv"][:1], "'new_kv' must be None or a tuple"),
    ("new_kv", lambda a: (a["new_kv"][0][:2], a["new_kv"][1]), "'k_new' has shape"),
    ("prefix", lambda a: (a["prefix"][0][:, :2], *a["prefix"][1:]), "'prefix scores' has shape"),
    ("prefix", lambda a: (a["prefix"][0], a["prefix"][1][:, :2], a["prefix"][2]), "'prefix_v' has shape"),
    ("groups", lambda a: (*a["groups"][:2], a["groups"][2] + 5, *a["groups"][3:]), "'group' has .* outside"),
    ("groups", lambda a: (torch.zeros(1), *a["groups"][1:]), "'groups' must hold numpy arrays"),
]


@pytest.mark.parametrize("arg, bad, message", BAD_CALLS, ids=[f"{c[0]}{i}" for i, c in enumerate(BAD_CALLS)])
def test_cpp_entry_names_the_bad_argument(arg, bad, message):
    assert native() is not None and hasattr(native(), "row_attention_f32"), "build reversalkit._C"
    args = _entry_args()
    args[arg] = bad(args)
    with pytest.raises(ValueError, match=message):
        native().row_attention_f32(**args)


def test_cpp_entry_runs_without_prefix_groups_or_new_kv():
    args = _entry_args()
    args.update(new_kv=None, prefix=None, groups=None)
    native().row_attention_f32(**args)
    assert np.isfinite(args["out"]).all()


def test_backends_a_layout_lacks_raise_naming_the_op():
    q, kc, vc, bt, cl = random_paged(2, 4, 2, 16, 4, [3, 5], num_blocks=8)
    with pytest.raises(ValueError, match="paged_decode: backend='cpp'"):
        paged_decode(q, kc, vc, bt, cl, 0.25, backend="cpp")
    args, kw = _cast(random_rows(2, 2, 2, 16, 12, [0, 4])[:5], {}, torch.float32)
    with pytest.raises(ValueError, match="row_decode has no Triton kernel"):
        row_decode(*args, 0.25, backend="triton")
    with pytest.raises(ValueError, match="row_decode: backend='cpp' needs float32"):
        row_decode(*_cast(args, {}, torch.float64)[0], 0.25, backend="cpp")
