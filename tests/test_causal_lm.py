"""CausalLM: a tiny GPT-2 built from a config, a tokenizer trained here."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
peft = pytest.importorskip("peft")

from sklearn.base import clone  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402

from sklearn_groupinf.torch import CausalLM  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    # peft calls a transformers API that transformers has deprecated
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning"),
]

TEXTS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "cats and dogs play together",
    "the park is green in spring",
    "a cat and a dog",
    "the mat is red",
    "dogs run fast",
    "green grass grows in the park every spring",
]

CANDIDATES = [
    "the cat ran in the park",
    "dogs play on the mat",
    "green cats",
    "a red dog sat",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


def train_tokenizer():
    """A byte-level BPE tokenizer trained on ``TEXTS`` (nothing downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=120,
        special_tokens=["[PAD]", "[UNK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXTS * 3, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]"
    )


def _gpt2(vocab_size, seed=0, lora=False):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_positions=64,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,  # no dropout: fits are deterministic and comparable
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).double()
    if lora:
        from peft import LoraConfig, get_peft_model

        conf = LoraConfig(
            r=2,
            lora_alpha=4,
            target_modules=["c_attn"],
            lora_dropout=0.0,
            fan_in_fan_out=True,  # GPT-2's Conv1D layers
            init_lora_weights=False,  # non-zero B: the adapter matters
        )
        model = get_peft_model(model, conf)
    return model


def test_per_example_loss_equals_transformers_own_loss(tokenizer):
    model = _gpt2(len(tokenizer))
    lm = CausalLM(model, tokenizer=tokenizer, batch_size=3)
    losses = lm.per_example_loss(TEXTS)
    model.eval()
    for text, loss in zip(TEXTS, losses):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model(input_ids=ids, labels=ids)
        # float64 reference: cross-entropy of the shifted float64 logits
        ref64 = torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:])
        assert loss == pytest.approx(float(ref64), rel=1e-13)
        # transformers computes its own loss in float32 (it upcasts to float())
        assert loss == pytest.approx(float(out.loss), rel=1e-6)


def test_padding_truncation_and_batch_size_do_not_change_losses(tokenizer):
    model = _gpt2(len(tokenizer), lora=True)
    base = CausalLM(model, tokenizer=tokenizer, batch_size=1).per_example_loss(TEXTS)
    for bs in (2, 3, 8):
        lm = CausalLM(model, tokenizer=tokenizer, batch_size=bs)
        np.testing.assert_allclose(lm.per_example_loss(TEXTS), base, rtol=1e-12)
    # pre-tokenised ids give the same losses; truncation cuts the texts
    ids = [tokenizer(t)["input_ids"] for t in TEXTS]
    np.testing.assert_allclose(
        CausalLM(model, batch_size=5).per_example_loss(ids), base, rtol=1e-12
    )
    short = CausalLM(model, max_length=4).per_example_loss(ids)
    np.testing.assert_allclose(
        short, CausalLM(model).per_example_loss([i[:4] for i in ids]), rtol=1e-12
    )


def test_fit_trains_only_lora_parameters_and_leaves_the_model_alone(tokenizer):
    model = _gpt2(len(tokenizer), lora=True)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lm = CausalLM(
        model, tokenizer=tokenizer, lr=5e-2, max_epochs=20, batch_size=4, random_state=0
    )
    loss0 = lm.per_example_loss(TEXTS).mean()
    lm.fit(TEXTS)
    # r=2 LoRA on c_attn (16 -> 48) in 2 layers: 2 * (2*16 + 48*2)
    assert lm.n_params_ == 2 * (2 * 16 + 48 * 2) == lm.trainable_parameter_count()
    assert lm.per_example_loss(TEXTS).mean() < loss0 - 0.1
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # a copy was fitted
    changed = {
        k
        for k, v in lm.model_.state_dict().items()
        if not torch.equal(v, before[k].to(v.dtype))
    }
    assert changed and all("lora_" in k for k in changed)
    # refitting is deterministic under random_state
    again = clone(lm).fit(TEXTS).per_example_loss(TEXTS)
    np.testing.assert_allclose(again, lm.per_example_loss(TEXTS), rtol=1e-10)


def test_zero_weights_equal_dropping_the_texts(tokenizer):
    """Zero weights remove texts from the objective: same fit as dropping them
    (with batch_size=1 and the same order of the kept texts)."""
    model = _gpt2(len(tokenizer), lora=True)
    kw = dict(tokenizer=tokenizer, lr=1e-2, max_epochs=1, batch_size=len(TEXTS))
    w = np.array([1.0, 0, 1, 1, 0, 1, 1, 1])
    a = CausalLM(model, **kw).fit(TEXTS, sample_weight=w)
    kept = [t for t, wi in zip(TEXTS, w) if wi]
    b = CausalLM(model, **{**kw, "batch_size": len(kept)}).fit(kept)
    np.testing.assert_allclose(
        a.per_example_loss(TEXTS), b.per_example_loss(TEXTS), rtol=1e-10
    )


def test_frozen_estimator_uses_the_model_as_it_is(tokenizer):
    model = _gpt2(len(tokenizer))
    model.train()
    frozen = FrozenEstimator(CausalLM(model, tokenizer=tokenizer))
    frozen.fit(TEXTS, None)  # a no-op
    assert model.training  # the user's module is not switched or converted
    model.eval()
    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    ref = float(torch.nn.functional.cross_entropy(logits, ids[0, 1:]))
    assert frozen.score(TEXTS[:1]) == pytest.approx(-ref, rel=1e-13)


def test_clear_errors(tokenizer):
    model = _gpt2(len(tokenizer))
    with pytest.raises(ValueError, match="tokenizer=None"):
        CausalLM(model).per_example_loss(TEXTS)
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        CausalLM(model).per_example_loss([[1, 2], [3]])
    with pytest.raises(ValueError, match="y must be None"):
        CausalLM(model, tokenizer=tokenizer).fit(TEXTS, np.zeros(len(TEXTS)))
    with pytest.raises(TypeError, match="sequence of texts"):
        CausalLM(model, tokenizer=tokenizer).per_example_loss("one text")
    with pytest.raises(ValueError, match="X\\[1\\] is neither"):
        CausalLM(model).per_example_loss([[1, 2, 3], [0.5, 1.5]])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        CausalLM("gpt2").per_example_loss([[1, 2, 3]])
    with pytest.raises(ValueError, match="max_length"):
        CausalLM(model, max_length=1).fit([[1, 2, 3]])


# ------------------------------------------------------------ GroupInfluence
def _flat_lora(model):
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])
    shapes = [(k, p.shape, p.numel()) for k, p in named]

    def unflatten(t):
        out, i = {}, 0
        for k, shape, size in shapes:
            out[k] = t[i : i + size].reshape(shape)
            i += size
        return out

    return theta, unflatten


def _lora_b_only(vocab_size):
    """r=1 LoRA on the second block's attention, only B trainable (48 params)."""
    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(
        r=1,
        lora_alpha=1,
        target_modules=["c_attn"],
        layers_to_transform=[1],
        lora_dropout=0.0,
        fan_in_fan_out=True,
        init_lora_weights=False,
    )
    model = get_peft_model(_gpt2(vocab_size), conf)
    for name, p in model.named_parameters():
        if "lora_A" in name:
            p.requires_grad_(False)
    return model


def _brute_force_influence(model, tokenizer, train, target, weight_decay, theta=None):
    """``grad l_i' H^-1 grad f`` by dense torch.func calculus, written here."""
    from torch.func import functional_call, grad, hessian

    theta0, unflatten = _flat_lora(model)
    theta = theta0 if theta is None else torch.as_tensor(theta)
    model.eval()

    def text_loss(t, text):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        out = functional_call(model, unflatten(t), args=(), kwargs={"input_ids": ids})
        return torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:])

    def objective(t):
        return sum(text_loss(t, x) for x in train) + 0.5 * weight_decay * (t * t).sum()

    def target_value(t):
        return sum(text_loss(t, x) for x in target) / len(target)

    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        H = hessian(objective)(theta)
        g_f = grad(target_value)(theta)
        G = torch.stack([grad(text_loss)(theta, x) for x in train])
    assert torch.linalg.eigvalsh(H)[0] > 0
    _brute_force_influence.self_influence = torch.einsum(
        "ip,ip->i", G, torch.linalg.solve(H, G.T).T
    ).numpy()
    # adding a text c: first-order change -grad l_c' H^-1 grad f
    Gc = torch.stack([grad(text_loss)(theta, x) for x in CANDIDATES])
    _brute_force_influence.adding = -(Gc @ torch.linalg.solve(H, g_f)).numpy()
    return (G @ torch.linalg.solve(H, g_f)).numpy(), float(target_value(theta))


def test_group_influence_of_a_frozen_lora_model_equals_brute_force(tokenizer):
    from sklearn_groupinf import GroupInfluence, NotStationaryWarning

    model = _lora_b_only(len(tokenizer))
    lm = CausalLM(model, tokenizer=tokenizer, weight_decay=1.0)
    train, target = TEXTS[:6], TEXTS[6:]
    with pytest.warns(NotStationaryWarning):  # a frozen, untrained adapter
        gi = GroupInfluence(FrozenEstimator(lm)).fit(train, X_target=target)
    assert gi.n_params_ == 48
    expected, f0 = _brute_force_influence(model, tokenizer, train, target, 1.0)
    np.testing.assert_allclose(gi.influence_, expected, rtol=1e-8, atol=1e-14)
    assert gi.target_value_ == pytest.approx(f0, rel=1e-12)
    groups = np.array([0, 0, 1, 1, 2, 2])
    res = gi.score_groups(groups, method="first_order")
    sums = [expected[:2].sum(), expected[2:4].sum(), expected[4:].sum()]
    np.testing.assert_allclose(res.first_order, sums, rtol=1e-8, atol=1e-14)
    # self-influence: the first-order rise of a text's own loss when removed
    np.testing.assert_allclose(
        gi.self_influence(), _brute_force_influence.self_influence, rtol=1e-8
    )
    # the other estimators and selection run on texts (rounds refit on subsets)
    assert np.all(np.isfinite(gi.score_groups(groups, method="newton").estimate))
    top = gi.select(2, method="first_order")
    assert set(top.indices) == set(np.argsort(expected)[:2])
    assert len(gi.select(2, n_rounds=2).indices) == 2
    # adding texts from outside the training set
    add = gi.select(2, action="add", X_candidates=CANDIDATES, method="first_order")
    assert set(add.indices) == set(np.argsort(_brute_force_influence.adding)[:2])
    rounds = gi.select(2, action="add", X_candidates=CANDIDATES, n_rounds=2)
    assert len(set(rounds.indices)) == 2


@pytest.mark.slow
def test_group_influence_of_a_fitted_lora_model_equals_brute_force(tokenizer):
    """Fine-tuned, then polished by GroupInfluence to a stationary point."""
    from sklearn_groupinf import GroupInfluence

    lm = CausalLM(
        _lora_b_only(len(tokenizer)),
        tokenizer=tokenizer,
        lr=5e-2,
        max_epochs=20,
        batch_size=6,
        weight_decay=0.1,
        random_state=0,
    )
    train, target = TEXTS[:6], TEXTS[6:]
    gi = GroupInfluence(lm).fit(train, X_target=target)
    assert gi.stationarity_[1] < 1e-8
    # at the polished parameters theta_ (the polish moved them from AdamW's)
    expected, _ = _brute_force_influence(
        gi.estimator_.model_, tokenizer, train, target, 0.1, theta=gi.theta_
    )
    np.testing.assert_allclose(gi.influence_, expected, rtol=1e-7, atol=1e-14)
