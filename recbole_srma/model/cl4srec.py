"""CL4SRec: Xie et al., "Contrastive Learning for Sequential Recommendation", ICDE 2022.

Loss: ``L = L_rec + lambda * L_cl`` with ``L_rec`` the full-softmax next-item cross-entropy of the shared backbone and
``L_cl`` the InfoNCE between two augmented views of every training sequence (2B - 2 in-batch negatives). Each view
comes from a different operator drawn at random per sequence among crop (keep a contiguous fraction ``eta``), mask
(replace a fraction ``gamma`` by the mask token) and reorder (shuffle a contiguous fraction ``beta``). The
representation contrasted is the backbone's hidden state at the last real position.

Deviations:
- From the paper: the next-item loss is a full softmax over all items (the paper trains SASRec-style with a sampled
  negative); this is the package's protocol for every model (docs/datasets.md). Crop keeps at least one item.
- From the RecBole-based reference code (the DuoRec repository's CL4SRec): augmentations never write into the stored
  training sequences (that code edits them in place through tensor views); the two views are encoded in one batched
  pass (same result, dropout masks are drawn per row either way); the operators are vectorised over the batch.
"""

import torch

from recbole_srma import hparams
from recbole_srma.model.augment import OPERATOR_NAMES, SequenceAugmenter
from recbole_srma.model.backbone import SequentialBackboneRecommender
from recbole_srma.model.losses import SIMILARITIES, info_nce


class CL4SRec(SequentialBackboneRecommender):
    HPARAMS = {
        **SequentialBackboneRecommender.HPARAMS,
        "cl_lambda": hparams.non_negative,
        "tau": hparams.positive,
        "sim": hparams.one_of(*SIMILARITIES),
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
        self.augmenter = SequenceAugmenter.from_rates(
            crop_eta=config["crop_eta"],
            mask_gamma=config["mask_gamma"],
            reorder_beta=config["reorder_beta"],
            mask_token=self.mask_token,
            operators=config["augmentations"],
        )

    def encode_views(self, item_seq, item_seq_len):
        """Two augmented views of the batch, encoded in one pass: ([B, H], [B, H])."""
        (seq1, len1), (seq2, len2) = self.augmenter.views(item_seq, item_seq_len, n_views=2)
        z = self.forward(torch.cat([seq1, seq2]), torch.cat([len1, len2]))
        return z.chunk(2)

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        rec_loss = self.rec_loss(self.forward(item_seq, item_seq_len), interaction[self.POS_ITEM_ID])
        z1, z2 = self.encode_views(item_seq, item_seq_len)
        cl_loss = info_nce(z1, z2, temperature=self.tau, similarity=self.sim)
        return rec_loss, self.cl_lambda * cl_loss
