"""BT4SRec: a Barlow Twins sequential recommender that needs no negatives, after Liu et al. 2025, "Enhancing User
Sequence Modeling through Barlow Twins-based Self-Supervised Learning" (no public code).

``L = L_rec + alpha * L_BT``. Two views of a batch go through the shared encoder (last real position's hidden
state) and a projector MLP (``projector_sizes``, :class:`~recbole_srma.model.layers.Projector`); ``L_BT`` is the
Barlow Twins loss on their cross-correlation matrix after per-dimension batch standardisation
(:func:`~recbole_srma.model.losses.barlow_twins`)::

    L_BT = sum_i (1 - C_ii)^2 + lambda_off * sum_{i != j} C_ij^2

Positives (``bt_positive``):

- ``augment``: two augmented views of every sequence, each from an operator drawn among ``augmentations`` (two
  distinct ones per sequence): ``mask`` (random items -> the mask token, rate ``mask_gamma``), ``segment_mask``
  (a contiguous segment -> the mask token, ``segment_mask_gamma``), ``reorder`` (``reorder_beta``);
- ``same_target``: the sequence and another training sequence with the same target item (BT-SR style; the
  sampler DuoRec uses, :mod:`recbole_srma.model.same_target`);
- ``both``: the sum of the two terms.

With ``train_objective: every_position`` a sample is a user's whole training sequence: the next-item loss covers its
every position, the views are views of the whole sequence, and ``same_target`` pairs the sequence (its last
position) with another user's whole sequence whose last training item is the same (a second encoder call).

``pretrain_epochs > 0``: before the usual training, :class:`~recbole_srma.model_trainers.BT4SRecTrainer` trains
the encoder and projector for that many epochs on ``L_BT`` alone (:meth:`BT4SRec.pretrain_loss`, no next-item loss),
then training continues on ``L_rec + alpha * L_BT`` (``alpha: 0`` makes it fine-tuning with CE only). A buffer
records that pre-training happened, so resuming from a checkpoint does not repeat it. Batches of fewer than 2
sequences have no batch statistics: their ``L_BT`` is skipped (0, no NaN).

Deviations and choices (the paper gives no code; docs/models.md): the projector is the Barlow Twins paper's
(linear layers without bias, BatchNorm and ReLU between them), each view projected with its own batch statistics;
the standardisation uses the biased batch variance plus ``eps`` 1e-5 (BatchNorm's); ``lambda_off`` defaults to a
value chosen for 64-dimensional projections by a sweep (docs/models.md), not the paper's 0.0051 for 8192
dimensions; the next-item loss is the package's full-softmax CE.
"""


import torch

from recbole_srma import hparams
from recbole_srma.model.augment import OPERATOR_NAMES, DataAugmentation
from recbole_srma.model.layers import Projector
from recbole_srma.model.losses import barlow_twins
from recbole_srma.model.recommender import SequentialBackboneRecommender
from recbole_srma.model.same_target import SameTargetSampler

POSITIVES = ("augment", "same_target", "both")


class BT4SRec(SequentialBackboneRecommender):
    HPARAMS = {
        **SequentialBackboneRecommender.HPARAMS,
        "alpha": hparams.non_negative,
        "lambda_off": hparams.non_negative,
        "projector_sizes": hparams.list_of(hparams.positive_int),
        "bt_positive": hparams.one_of(*POSITIVES),
        "augmentations": hparams.subset_of(*OPERATOR_NAMES),
        "mask_gamma": hparams.rate,
        "segment_mask_gamma": hparams.rate,
        "reorder_beta": hparams.rate,
        "pretrain_epochs": hparams.non_negative_int,
    }

    @classmethod
    def pretraining_note(cls, config):
        """Said at the start of a run when the pre-training stage is on."""
        if not config["pretrain_epochs"]:
            return None
        return (
            f"BT4SRec first pre-trains for pretrain_epochs={config['pretrain_epochs']} epochs on the Barlow Twins loss "
            "alone, then trains for up to --epochs with the next-item loss"
        )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.alpha = config["alpha"]
        self.lambda_off = config["lambda_off"]
        self.bt_positive = config["bt_positive"]
        self.pretrain_epochs = config["pretrain_epochs"]
        self.projector = Projector(config["hidden_size"], config["projector_sizes"])
        self.data_augmentation = DataAugmentation.from_config(config, self.mask_token)
        self.same_target = None
        if self.bt_positive in ("same_target", "both"):
            self.same_target = SameTargetSampler(
                dataset, self.ITEM_SEQ, self.ITEM_SEQ_LEN, self.POS_ITEM_ID, owner=type(self).__name__
            )
        # A buffer, so checkpoints record that the pre-training stage is done.
        self.register_buffer("pretrained", torch.tensor(False))

    def encode_pairs(self, interaction):
        """The next-item loss's ``(hidden, targets)`` and the positive pairs of the Barlow Twins term:
        ``((hidden, targets), [(z_a, z_b), ...])`` (one encoder call with prefix samples, two on every position)."""
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        extra = []
        if self.bt_positive in ("augment", "both"):
            extra += self.data_augmentation.views(item_seq, item_seq_len, n_views=2)
        if self.same_target is not None:
            partner_seq, partner_len, _ = self.same_target.partners(interaction)
            extra.append((partner_seq, partner_len))
        next_item, seq_output, others = self.next_item_and_extra(interaction, extra)
        pairs = []
        if self.bt_positive in ("augment", "both"):
            pairs.append((others[0], others[1]))
        if self.same_target is not None:
            pairs.append((seq_output, others[-1]))
        return next_item, pairs

    def bt_loss(self, pairs):
        """Sum of the Barlow Twins losses of the projected pairs; 0 for batches of one sequence (no batch
        statistics)."""
        if pairs[0][0].shape[0] < 2:
            # zero, but every parameter of the term stays in the graph (distributed gradient sync expects them)
            touched = [a.sum() + b.sum() for a, b in pairs] + [p.sum() for p in self.projector.parameters()]
            return sum(touched) * 0.0
        return sum(barlow_twins(self.projector(a), self.projector(b), self.lambda_off) for a, b in pairs)

    def calculate_loss(self, interaction):
        if self.alpha == 0:  # CE only (e.g. fine-tuning after pre-training): no views to encode
            rec_loss = self.rec_loss(*self.next_item_and_extra(interaction)[0])
            return rec_loss, torch.zeros_like(rec_loss)
        next_item, pairs = self.encode_pairs(interaction)
        return self.rec_loss(*next_item), self.alpha * self.bt_loss(pairs)

    def pretrain_loss(self, interaction):
        """``L_BT`` alone (the pre-training stage's objective)."""
        return self.bt_loss(self.encode_pairs(interaction)[1])
