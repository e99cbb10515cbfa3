"""CL4SRec: Xie et al., "Contrastive Learning for Sequential Recommendation", ICDE 2022.

Loss: ``L = L_rec + lambda * L_cl`` with ``L_rec`` the full-softmax next-item cross-entropy of the shared backbone and
``L_cl`` the InfoNCE between two augmented views of every training sequence (2B - 2 in-batch negatives). Each view
comes from a different operator drawn at random per sequence among crop (keep a contiguous fraction ``eta``), mask
(replace a fraction ``gamma`` by the mask token) and reorder (shuffle a contiguous fraction ``beta``). The
representation contrasted is the backbone's hidden state at the last real position. With ``train_objective:
every_position`` a sample is a user's whole training sequence: ``L_rec`` is the next-item loss at its every
position, ``L_cl`` the InfoNCE between two views of the whole sequence (as the Salesforce-based official codes of
CoSeRec and SRMA contrast whole training sequences).

Deviations:
- From the paper: the next-item loss is a full softmax over all items (the paper trains SASRec-style with a sampled
  negative); this is the package's protocol for every model (docs/datasets.md). Crop keeps at least one item.
- From the RecBole-based reference code (the DuoRec repository's CL4SRec): augmentations never write into the stored
  training sequences (that code edits them in place through tensor views); the two views are encoded in one batched
  pass together with the original sequences of the next-item loss (same result: dropout masks are drawn per row
  either way); the operators are vectorised over the batch.
"""

import torch

from recbole_srma import hparams
from recbole_srma.model.augment import OPERATOR_NAMES, DataAugmentation
from recbole_srma.model.losses import SIMILARITIES, info_nce
from recbole_srma.model.recommender import SequentialBackboneRecommender


class CL4SRec(SequentialBackboneRecommender):
    EVERY_POSITION = True  # InfoNCE between two views of the user's whole training sequence
    HPARAMS = {
        **SequentialBackboneRecommender.HPARAMS,
        "cl_lambda": hparams.non_negative,
        "tau": hparams.temperature,
        "sim": hparams.one_of(*SIMILARITIES, what="similarity"),
        "crop_eta": hparams.rate,
        "mask_gamma": hparams.rate,
        "reorder_beta": hparams.rate,
        "augmentations": hparams.subset_of(*OPERATOR_NAMES),
    }

    def __init__(self, config, dataset, **backbone_overrides):
        super().__init__(config, dataset, **backbone_overrides)
        self.cl_lambda = config["cl_lambda"]
        self.tau = config["tau"]
        self.sim = config["sim"]
        self.data_augmentation = self.build_data_augmentation(config, dataset)

    def build_data_augmentation(self, config, dataset):
        """CL4SRec's views: two distinct operators per sequence among crop, mask and reorder."""
        return DataAugmentation.from_config(config, self.mask_token)

    def encode_with_views(self, item_seq, item_seq_len, views=None):
        """The batch and two augmented views of it, encoded in one pass: ``(seq_output, z1, z2, (seq1, len1))``.

        ``views``: ``[(seq1, len1), (seq2, len2)]`` drawn beforehand (MCLRec reuses one draw across its phases);
        ``None`` draws them here.
        """
        if views is None:
            views = self.data_augmentation.views(item_seq, item_seq_len, n_views=2)
        hidden = self.encode_stacked(
            torch.cat([item_seq] + [seq for seq, _ in views]), torch.cat([item_seq_len] + [n for _, n in views])
        )
        seq_output, z1, z2 = hidden.chunk(3)
        return seq_output, z1, z2, views[0]

    def encode_stacked(self, item_seq, item_seq_len, with_original=True):
        """Representations of ``[original; view 1; view 2]`` (``[view 1; view 2]`` without the original) stacked
        along the batch (a hook for SRMA)."""
        return self.forward(item_seq, item_seq_len)

    def next_item_and_views(self, item_seq, item_seq_len, pos_items, views=None):
        """What every loss of the CL4SRec family reads, for either ``train_objective``:
        ``((hidden, targets), z1, z2, (seq1, len1))``, the next-item loss's representations and targets and the two
        views' representations. ``prefixes``: one encoder pass of the batch and its views, the last position against
        the sample's target. ``every_position``: every real position against its next item, then the views of the
        whole sequence in a second pass."""
        if self.train_objective != "every_position":
            seq_output, z1, z2, view1 = self.encode_with_views(item_seq, item_seq_len, views)
            return (seq_output, pos_items), z1, z2, view1
        if views is None:
            views = self.data_augmentation.views(item_seq, item_seq_len, n_views=2)
        next_item = self.every_position(item_seq, item_seq_len, pos_items)
        stacked = self.encode_stacked(
            torch.cat([seq for seq, _ in views]), torch.cat([n for _, n in views]), with_original=False
        )
        z1, z2 = stacked.chunk(2)
        return next_item, z1, z2, views[0]

    def calculate_loss(self, interaction):
        next_item, z1, z2, _ = self.next_item_and_views(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.POS_ITEM_ID]
        )
        cl_loss = info_nce(z1, z2, temperature=self.tau, similarity=self.sim)
        return self.rec_loss(*next_item), self.cl_lambda * cl_loss
