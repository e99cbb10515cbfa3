"""The shared backbone is RecBole's SASRec: same parameter names, same scores with the same weights."""

import torch
from recbole.model.sequential_recommender.sasrec import SASRec
from tiny import build

from recbole_srma.model.encoder import SASRecBackbone
from recbole_srma.model.recommender import SequentialBackboneRecommender


def _batch(loader):
    interaction, *_ = next(iter(loader))
    return interaction


def test_scores_equal_recbole_sasrec_with_same_weights(tmp_path):
    config, model, train_data, valid_data, _ = build("CL4SRec", tmp_path)
    sasrec = SASRec(config, train_data._dataset)
    # SASRec has no mask-token row: copy everything it has, the mask row keeps its own value.
    own = model.backbone.state_dict()
    for name, value in sasrec.state_dict().items():
        if name == "item_embedding.weight":
            own[name][: value.shape[0]] = value
        else:
            assert own[name].shape == value.shape, name
            own[name] = value
    model.backbone.load_state_dict(own)
    model.eval()
    sasrec.eval()
    interaction = _batch(valid_data)
    with torch.no_grad():
        ours = model.full_sort_predict(interaction)
        theirs = sasrec.full_sort_predict(interaction)
    assert ours.shape == theirs.shape == (len(interaction), train_data._dataset.item_num)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # a real comparison: different weights give different scores
    weight = model.backbone.trm_encoder.layer[0].feed_forward.dense_1.weight.data
    weight.add_(0.1 * torch.randn_like(weight))
    with torch.no_grad():
        assert not torch.allclose(model.full_sort_predict(interaction), theirs, atol=1e-4)


def test_parameter_names_match_sasrec(tmp_path):
    config, model, train_data, *_ = build("CL4SRec", tmp_path)
    sasrec = SASRec(config, train_data._dataset)
    assert set(sasrec.state_dict()) == set(model.backbone.state_dict())


def test_padding_does_not_leak_into_the_last_position():
    torch.manual_seed(0)
    net = SASRecBackbone(n_items=30, max_seq_length=8, hidden_size=16, inner_size=32).eval()
    seq = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0]])
    other = torch.tensor([[3, 4, 5, 9, 9, 0, 0, 0]])  # later items must not change the state at position 2
    length = torch.tensor([3])
    with torch.no_grad():
        torch.testing.assert_close(net(seq, length), net(other, length))
        assert not torch.allclose(net(other, torch.tensor([5])), net(seq, length))


def test_mask_token_is_never_scored(tmp_path):
    config, model, train_data, valid_data, _ = build("CL4SRec", tmp_path)
    n_items = train_data._dataset.item_num
    assert model.mask_token == n_items
    assert model.backbone.item_embedding.num_embeddings == n_items + 1
    with torch.no_grad():
        scores = model.eval().full_sort_predict(_batch(valid_data))
    assert scores.shape[1] == n_items


def test_plugin_models_use_the_shared_backbone():
    from recbole_srma.model.cl4srec import CL4SRec

    assert issubclass(CL4SRec, SequentialBackboneRecommender)
