"""K-FAC / EK-FAC for causal language models, against the exact Gauss-Newton matrix.

A tiny GPT-2 (vocabulary 12, width 8) built from a config with a LoRA adapter;
texts are token-id sequences, so nothing is tokenised or downloaded.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from scipy.stats import spearmanr  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402

from sklearn_groupinf import GroupInfluence, NotStationaryWarning  # noqa: E402
from sklearn_groupinf.backends._kfac_tokens import (  # noqa: E402
    TokenKroneckerCurvature,
    check_token_layers,
)
from sklearn_groupinf.backends._text_factory import (  # noqa: E402
    PackedLM,
    TextEncoder,
    TextTarget,
    TokenMeanLoss,
)
from sklearn_groupinf.backends._torch import TorchBackend  # noqa: E402
from sklearn_groupinf.torch import CausalLM  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

VOCAB = 12


def _gpt2(train="lora_", seed=0, layers=(1,), r=2):
    """GPT-2, LoRA on ``c_attn``; trainable: the names containing ``train``."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=16,
        n_embd=8,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).double()
    conf = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=["c_attn"],
        layers_to_transform=list(layers),
        lora_dropout=0.0,
        fan_in_fan_out=True,
        init_lora_weights=False,  # non-zero B: the adapter matters
    )
    model = get_peft_model(model, conf)
    for name, p in model.named_parameters():
        p.requires_grad_(train in name)
    return model


def _texts(n, seed, lo=2, hi=7):
    rng = np.random.default_rng(seed)
    return [
        list(rng.integers(0, VOCAB, size=int(rng.integers(lo, hi)))) for _ in range(n)
    ]


def _exact_backend(model, texts, target=None, weight_decay=0.0, curvature="ggn"):
    """The torch backend over packed texts with the exact GGN (or Hessian),
    its output Hessian by ``torch.func.hessian`` of the per-text loss."""
    lm = CausalLM(model, weight_decay=weight_decay)
    module, device, dtype = lm._setup()
    enc = TextEncoder(lm, device, dtype)
    Xp = enc.pack(texts)
    Xt = Xp if target is None else enc.pack(target)
    params = [p for p in module.parameters() if p.requires_grad]
    ones = torch.ones
    backend = TorchBackend(
        PackedLM(module),
        TokenMeanLoss(),
        Xp,
        Xp,
        sample_weight=ones(len(Xp), dtype=dtype),
        weight_decay=weight_decay,
        mask=[torch.ones_like(p) for p in params],
        penalty_form="sum",
        X_target=Xt,
        y_target=Xt,
        target_weight=ones(len(Xt), dtype=dtype),
        target=TextTarget(),
        target_name="token_cross_entropy",
        encoder=enc,
        curvature=curvature,
        hessian_solver="dense",
    )
    return backend, module, Xp


def _curvature(module, Xp, kind, **kw):
    kw.setdefault("fisher", "exact")
    return TokenKroneckerCurvature(
        PackedLM(module), TokenMeanLoss(), kind=kind, **kw
    ).fit(Xp, Xp)


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_equal_to_the_exact_ggn_where_exact(kind):
    """One trainable linear layer (LoRA A of one block) and texts of two tokens
    that share the first: one loss position whose inputs are the same for every
    text, so the GGN block is exactly Kronecker."""
    model = _gpt2(train="lora_A")
    rng = np.random.default_rng(0)
    texts = [[3, int(rng.integers(VOCAB))] for _ in range(6)]
    backend, module, Xp = _exact_backend(model, texts, weight_decay=0.3)
    F = backend.hessian()  # GGN + 0.3 I
    curv = _curvature(module, Xp, kind, damping=0.01, penalty=0.3)
    assert curv.n_params_ == 16 and len(curv.layers_) == 1
    np.testing.assert_allclose(
        curv.dense(), F + 0.01 * 6 * np.eye(16), rtol=0, atol=1e-12 * np.abs(F).max()
    )
    # with different first tokens the inputs differ: no longer exact
    texts = [[int(rng.integers(VOCAB)), int(rng.integers(VOCAB))] for _ in range(6)]
    backend, module, Xp = _exact_backend(model, texts)
    err = np.abs(_curvature(module, Xp, kind).dense() - backend.hessian()).max()
    assert err > 1e-4 * np.abs(backend.hessian()).max()


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_padding_and_batch_size_change_nothing(kind):
    model = _gpt2()
    _, module, Xp = _exact_backend(model, _texts(7, 1))
    L = Xp.shape[1] // 2
    pad = torch.zeros(len(Xp), 3, dtype=Xp.dtype)
    wide = torch.cat([Xp[:, :L], pad, Xp[:, L:], pad], 1)  # three more padding
    a = _curvature(module, Xp, kind).dense()
    b = _curvature(module, wide, kind, batch_size=3).dense()
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-13 * np.abs(a).max())


def test_ekfac_diagonal_in_its_eigenbasis_is_the_exact_ggn():
    """Two layers (LoRA A and B), texts of several lengths: EK-FAC's corrected
    eigenvalues are the exact GGN's diagonal in the Kronecker eigenbasis."""
    model = _gpt2()
    backend, module, Xp = _exact_backend(model, _texts(8, 2))
    F = backend.hessian()
    curv = _curvature(module, Xp, "ekfac")
    for layer, f in zip(curv._layout.layers, curv.factors_):
        rows = np.arange(curv.n_params_)[curv._layout.slices[layer["weight"]]]
        Q = np.kron(f["qg"].numpy(), f["qa"].numpy())
        block = F[np.ix_(rows, rows)]
        np.testing.assert_allclose(
            np.diag(Q.T @ block @ Q), f["lam"].numpy().reshape(-1), atol=1e-14
        )


def test_sampled_fisher_approaches_the_exact_factors():
    model = _gpt2()
    _, module, Xp = _exact_backend(model, _texts(8, 3))
    exact = _curvature(module, Xp, "kfac").dense()
    few = _curvature(module, Xp, "kfac", fisher="sampled", n_draws=10).dense()
    many = _curvature(module, Xp, "kfac", fisher="sampled", n_draws=300).dense()
    e_few = np.linalg.norm(few - exact) / np.linalg.norm(exact)
    e_many = np.linalg.norm(many - exact) / np.linalg.norm(exact)
    assert e_many < 0.05 and e_many < e_few


def _reference_scores(backend, damping, groups):
    """First-order and interaction group scores by dense linear algebra."""
    H = backend.hessian() + damping * backend.data_weight * np.eye(backend.n_params)
    Q = backend.removal_gradients()
    M = (groups[None, :] == np.unique(groups)[:, None]).astype(float)
    U = np.linalg.solve(H, (M @ Q).T)  # (P, g) parameter shifts
    first = U.T @ backend.target_gradient()
    return first, first + 0.5 * np.einsum("pg,pq,qg->g", U, backend.target_hessian(), U)


@pytest.mark.parametrize(
    "kind", ["ekfac", pytest.param("kfac", marks=pytest.mark.slow)]
)
def test_group_scores_match_the_exact_ggn(kind):
    """Group scores with EK-FAC / K-FAC against the exact GGN (training and
    target), LoRA on both blocks (128 parameters), 24 texts in 12 groups.
    Measured Spearman (first order, interaction): EK-FAC 0.958, 0.951 and
    K-FAC 0.909, 0.944 at damping 3e-3 (this fixture); EK-FAC 0.755, 0.776 at
    1e-3 and 1.0, 0.979 at 1e-2. At 3e-3 the curvature still matters: scores
    through the identity in place of the curvature have Spearman 0.83, 0.80."""
    model = _gpt2(layers=(0, 1))
    train, target = _texts(24, 4), _texts(6, 5)
    groups = np.repeat(np.arange(12), 2)
    lm = CausalLM(model, weight_decay=0.01)
    ref, _, _ = _exact_backend(model, train, target, weight_decay=0.01)
    first, inter = _reference_scores(ref, 3e-3, groups)
    plain = _reference_scores(ref, 1e3, groups)  # curvature ~ identity
    assert max(spearmanr(plain[0], first)[0], spearmanr(plain[1], inter)[0]) < 0.85
    with pytest.warns(NotStationaryWarning):
        gi = GroupInfluence(
            FrozenEstimator(lm),
            curvature=kind,
            damping=3e-3,
            target_rank=128,
            curvature_options={"fisher": "exact"},
        ).fit(train, X_target=target)
    assert gi.n_params_ == 128
    res = gi.score_groups(groups, method="interaction")
    assert spearmanr(res.first_order, first)[0] >= 0.9
    assert spearmanr(res.estimate, inter)[0] >= 0.9


def test_reference_scores_are_the_packages():
    """The dense reference formula above gives GroupInfluence's own scores with
    the exact Hessian."""
    model = _gpt2(layers=(1,))
    train, target = _texts(12, 4), _texts(4, 5)
    groups = np.repeat(np.arange(6), 2)
    lm = CausalLM(model, weight_decay=0.01)
    ref, _, _ = _exact_backend(model, train, target, 0.01, curvature="hessian")
    with pytest.warns(NotStationaryWarning):
        gi = GroupInfluence(
            FrozenEstimator(lm), curvature="exact", damping=0.2, polish=False
        ).fit(train, X_target=target)
    res = gi.score_groups(groups, method="interaction")
    first, inter = _reference_scores(ref, 0.2, groups)
    np.testing.assert_allclose(res.first_order, first, rtol=1e-8)
    np.testing.assert_allclose(res.estimate, inter, rtol=1e-8)


def test_clear_errors():
    with pytest.raises(ValueError, match="Conv1D"):
        check_token_layers(_gpt2(train="c_attn.base_layer"))
    lm = CausalLM(_gpt2(), weight_decay=0.1)
    with pytest.raises(ValueError, match="curvature='ggn' is not available"):
        GroupInfluence(FrozenEstimator(lm), curvature="ggn").fit(_texts(4, 0))
    model = _gpt2()
    _, module, Xp = _exact_backend(model, _texts(4, 0, lo=8, hi=9))
    with pytest.raises(MemoryError, match="'fisher': 'sampled'"):
        import sklearn_groupinf.backends._kfac_tokens as kt

        saved, kt.MAX_EXACT_ROWS = kt.MAX_EXACT_ROWS, 1000
        try:
            _curvature(module, Xp, "ekfac")
        finally:
            kt.MAX_EXACT_ROWS = saved


def test_sampled_default_does_not_depend_on_batch_size(monkeypatch):
    """The default (labels drawn per text and position, seeded) through
    GroupInfluence, and curvature='auto' choosing EK-FAC above the size limit."""
    import sklearn_groupinf.backends._text_factory as tf

    monkeypatch.setattr(tf, "AUTO_KFAC_PARAMS", 100)  # 128 parameters: 'ekfac'
    model = _gpt2(layers=(0, 1))
    train, target = _texts(10, 6), _texts(4, 7)
    out = []
    for bs in (3, 10):
        lm = CausalLM(model, weight_decay=0.01, batch_size=bs)
        with pytest.warns(NotStationaryWarning):
            gi = GroupInfluence(FrozenEstimator(lm), damping=3e-3).fit(
                train, X_target=target
            )
        assert type(gi._state.solver).__name__ == "TokenKroneckerCurvature"
        out.append(gi.score_groups(np.arange(10) % 5, method="interaction").estimate)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_gpu_agree():
    model = _gpt2(layers=(0, 1))
    train, target = _texts(24, 4), _texts(6, 5)
    res = {}
    for device in ("cpu", "cuda"):
        lm = CausalLM(model, weight_decay=0.01, device=device, dtype="float64")
        with pytest.warns(NotStationaryWarning):
            gi = GroupInfluence(FrozenEstimator(lm), curvature="ekfac", damping=3e-3)
            gi.fit(train, X_target=target)
        res[device] = gi.score_groups(np.arange(24) % 12, method="interaction")
    np.testing.assert_allclose(
        res["cuda"].estimate, res["cpu"].estimate, rtol=1e-6, atol=1e-12
    )


def test_ekfac_texts_interaction_matrix_and_selection_agree_with_scores():
    """With EK-FAC on texts, ``interaction_matrix`` is the pairwise form of
    ``score_groups``: ``est(G) = b_G + K_GG / 2`` for every group, and the
    estimate of a union of two groups is ``b_1 + b_2 + (K_11 + K_22)/2 +
    K_12``; ``select`` (remove, and add from candidate texts) runs on it."""
    model = _gpt2(layers=(0, 1))
    train, target = _texts(16, 4), _texts(4, 5)
    groups = np.repeat(np.arange(8), 2)
    with pytest.warns(NotStationaryWarning):
        gi = GroupInfluence(
            FrozenEstimator(CausalLM(model, weight_decay=0.01)),
            curvature="ekfac",
            damping=1e-2,
            target_rank=32,
        ).fit(train, X_target=target)
    res = gi.score_groups(groups, method="interaction")
    K = np.asarray(gi.interaction_matrix(groups, form="dense"))
    np.testing.assert_allclose(K, K.T, rtol=1e-10, atol=1e-14)
    b = res.first_order
    np.testing.assert_allclose(b + np.diag(K) / 2, res.estimate, rtol=1e-8)
    pair = np.where(np.isin(groups, [0, 1]), 0, 1 + groups)
    union = gi.score_groups(pair, method="interaction").estimate[0]
    expected = b[0] + b[1] + (K[0, 0] + K[1, 1]) / 2 + K[0, 1]
    np.testing.assert_allclose(union, expected, rtol=1e-8)
    assert len(gi.select(3, groups=groups).groups) == 3
    add = gi.select(2, action="add", X_candidates=_texts(6, 7), n_rounds=2)
    assert len(add.indices) == 2
