"""The fast path computes the same model as the padded reference path (docs/performance.md)."""

import pytest
import torch
from tiny import assert_same_loss_and_gradients, build, loss_and_gradients

from recbole_srma.model.encoder import Dropout, PackedLayout, SASRecBackbone

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def _random_batch(n_items=40, batch=33, length=12, seed=0):
    """Left-aligned sequences of every length from 1 to ``length`` (RecBole's layout)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[:2] = torch.tensor([1, length])
    seq = torch.randint(1, n_items + 1, (batch, length), generator=g)
    seq[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return seq, lengths


def _pair(n_layers=2, **kwargs):
    torch.manual_seed(0)
    fast = SASRecBackbone(40, 12, hidden_size=16, inner_size=32, n_layers=n_layers, **kwargs)
    slow = SASRecBackbone(40, 12, hidden_size=16, inner_size=32, n_layers=n_layers, fast_path=False, **kwargs)
    slow.load_state_dict(fast.state_dict())
    return fast, slow


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_packed_forward_equals_padded_forward(n_layers, bidirectional):
    fast, slow = _pair(n_layers, bidirectional=bidirectional)
    seq, lengths = _random_batch()
    fast.eval(), slow.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(seq, lengths), slow(seq, lengths), rtol=1e-5, atol=1e-6)
        every_fast, layout = fast.encode_packed(seq, lengths)
        every_slow = slow.encode(seq)[seq != 0]
        torch.testing.assert_close(every_fast, every_slow, rtol=1e-5, atol=1e-6)
        # a real switch: the first position sees later ones only when bidirectional
        other, _ = _pair(n_layers, bidirectional=not bidirectional)
        other.eval()
        assert not torch.allclose(other.encode_packed(seq, lengths)[0], every_fast, atol=1e-4)


def test_packed_path_ignores_what_lies_beyond_the_length_and_trims_to_the_longest():
    fast, _ = _pair()
    fast.eval()
    seq, lengths = _random_batch()
    wider = torch.cat([seq, torch.zeros(seq.size(0), 8, dtype=seq.dtype)], dim=1)
    layout = PackedLayout(wider, lengths)
    assert layout.max_len == int(lengths.max()) and layout.index.numel() == int(lengths.sum())
    with torch.no_grad():
        torch.testing.assert_close(fast(wider[:, :12], lengths), fast(seq, lengths))


def test_gradients_equal_on_both_paths_without_dropout():
    fast, slow = _pair(**NO_DROPOUT)
    seq, lengths = _random_batch()
    target = torch.randint(1, 41, (seq.size(0),))
    grads = []
    for net in (fast, slow):
        net.train()
        out = net(seq, lengths)
        torch.nn.functional.cross_entropy(out @ net.item_embedding.weight.t(), target).backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_switch_really_switches_paths():
    fast, _ = _pair()
    calls = []
    original = fast.forward_packed
    fast.forward_packed = lambda *a: calls.append(1) or original(*a)
    seq, lengths = _random_batch()
    fast(seq, lengths)
    assert calls == [1]
    fast.set_fast_path(False)
    fast(seq, lengths)
    assert calls == [1] and not any(m.fast for m in fast.modules() if isinstance(m, Dropout))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_fast_dropout_keeps_each_unit_with_probability_1_minus_p_and_rescales(p):
    drop = Dropout(p)
    drop.fast = True
    torch.manual_seed(0)
    out = drop(torch.ones(200_000))
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    drop.eval()
    x = torch.randn(10)
    assert torch.equal(drop(x), x)


def test_fast_dropout_edges():
    x = torch.randn(100)
    one, zero = Dropout(1.0), Dropout(0.0)
    one.fast = zero.fast = True
    assert torch.equal(one(x), torch.zeros_like(x)) and torch.equal(zero(x), x)


@pytest.mark.parametrize("model", ["PluginSASRec", "SRMA"])
def test_evaluation_scores_and_metrics_equal_with_and_without_padding_removal(tmp_path, model):
    from recbole_srma.registry import get_trainer

    extra = {"complement_type": "none"} if model == "SRMA" else {}
    config, net, _, valid_data, _ = build(model, tmp_path, **extra)
    net.eval()
    interaction = next(iter(valid_data))[0]
    results, scores = [], []
    for fast in (True, False):
        net.backbone.set_fast_path(fast)
        with torch.no_grad():
            scores.append(net.full_sort_predict(interaction))
        trainer = get_trainer(config["MODEL_TYPE"], model)(config, net)
        results.append(trainer.evaluate(valid_data, load_best_model=False))
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-5, atol=1e-6)
    assert torch.equal(scores[0].topk(20).indices, scores[1].topk(20).indices)
    assert results[0] == results[1]


def test_one_training_step_matches_without_dropout(tmp_path):
    """Same loss and same update on both paths when no randomness is involved (all views identity)."""
    off = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "neuron_mask_p": 0.0, "layer_drop_K": 0,
           "layer_drop_M": 0, "augmentations": ["identity"], "complement_type": "none", "neuron_mask_scope": "all"}
    results = []
    for fast in (True, False):
        _, net, train_data, *_ = build("SRMA", tmp_path, fast_path=fast, **off)
        assert net.backbone.fast_path is fast
        net.train()
        results.append(loss_and_gradients(net, next(iter(train_data))))
    assert_same_loss_and_gradients(*results)


def test_native_gelu_is_gelu_and_leaves_onednn_on():
    from recbole_srma.compat import native_gelu

    _NativeGELU = native_gelu()
    x = torch.randn(37, 16, requires_grad=True)
    y = torch.randn(37, 16)
    (_NativeGELU.apply(x) * y).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    (torch.nn.functional.gelu(x) * y).sum().backward()
    torch.testing.assert_close(_NativeGELU.apply(x), torch.nn.functional.gelu(x))
    torch.testing.assert_close(ours, x.grad)
    assert torch.backends.mkldnn.enabled  # the switch is restored for everything else
