"""CoSeRec: Liu et al., "Contrastive Self-supervised Sequential Recommendation with Robust Augmentation", 2021
(arXiv:2108.06479).

CL4SRec's contrastive set-up with two more, correlation-aware operators: ``insert`` (before a fraction of positions,
insert the item most similar to the one there) and ``substitute`` (replace a fraction of items by their most similar
item). Similarity: ItemCF with inverse user frequency over the training split (recbole_srma/model/similarity.py),
computed with sparse matrices and cached by the data it came from. From epoch ``hybrid_warm_up_epochs`` on, each
epoch also computes every item's nearest neighbour by the current item embeddings and keeps, per item, whichever
candidate scores higher (normalised scores), as the paper's hybrid does.

Each view draws its operator independently among all five (CoSeRec's code draws per call); sequences of length
``<= augment_threshold`` draw only from ``short_augmentations`` (the code's default "SIM": insert, substitute, mask);
``augment_threshold: -1`` applies every operator to every sequence. Loss: ``L_rec + cl_lambda * InfoNCE(view1,
view2)``. Defaults are the official code's: crop keeps 0.2, mask 0.7, reorder 0.2, insert 0.4, substitute 0.1,
threshold 4, warm-up 160 epochs, temperature 1, weight 0.1.

With ``train_objective: every_position`` (CL4SRec's docstring) the views are views of the user's whole training
sequence, as the official code's; the item similarity reads the same items from one sequence per user as from the
prefixes (items older than ``MAX_ITEM_LIST_LENGTH`` excepted, similarity.training_pairs).

Deviations:
- From the paper: the next-item loss is a full softmax over all items (the package's protocol); the contrasted
  representation is the last position's hidden state (the code contrasts the flattened whole-sequence output).
- From the official code: reorder uses ``reorder_beta`` (the code builds its Reorder with the mask rate gamma for
  long sequences); mask writes the mask token (the code writes item 0, padding); crop may start anywhere a window
  fits (the code's window never reaches the last item); insert and substitute always pick at least one position
  (as the code) and insert keeps the 50 most recent items; online similarity picks the highest normalised dot
  product (the code's normalisation is min-max too). See similarity.py for the similarity's own deviations.
"""

from logging import getLogger

from recbole.utils import set_color

from recbole_srma import hparams
from recbole_srma.errors import ConfigError
from recbole_srma.model import similarity
from recbole_srma.model.augment import OPERATOR_NAMES, DataAugmentation
from recbole_srma.model.cl4srec import CL4SRec


def _threshold(value):
    if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
        raise ValueError(f"must be a positive integer, or -1 to apply every operator to every sequence; got {value!r}")


class CoSeRec(CL4SRec):
    HPARAMS = {
        **CL4SRec.HPARAMS,
        "insert_rate": hparams.rate,
        "substitute_rate": hparams.rate,
        "augment_threshold": _threshold,
        "short_augmentations": hparams.subset_of(*OPERATOR_NAMES),
        "hybrid_warm_up_epochs": hparams.non_negative_int,
    }

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        missing = [n for n in config["short_augmentations"] if n not in config["augmentations"]]
        if config["augment_threshold"] != -1 and missing:
            raise ConfigError(
                f"CoSeRec: short_augmentations {missing} are not in augmentations {list(config['augmentations'])}; "
                "short sequences draw from a subset of the operators"
            )

    def build_data_augmentation(self, config, dataset):
        neighbour, score, info = similarity.offline_top1(
            dataset,
            self.ITEM_SEQ,
            dataset.uid_field,
            self.ITEM_ID,
            cache_dir=f"{config['checkpoint_dir']}/coserec_similarity",
            name=str(config["dataset"]),
        )
        getLogger().info(
            set_color("CoSeRec item similarity (ItemCF-IUF)", "blue")
            + f": {'cache ' + info['source'] if info['cached'] else 'computed'} in {info['seconds']:.2f} s"
        )
        self.similarity_info = info
        self.offline_neighbour, self.offline_score = neighbour, score
        # not persistent: rebuilt from the data (offline) and the embeddings (hybrid), never read from a checkpoint
        self.register_buffer("similar_item", similarity.hybrid_table(neighbour, score), persistent=False)
        self.hybrid_warm_up_epochs = config["hybrid_warm_up_epochs"]
        self.hybrid_since = None
        threshold = config["augment_threshold"]
        return DataAugmentation.from_config(
            config,
            self.mask_token,
            lookup=self.most_similar,
            distinct=False,
            short_threshold=None if threshold == -1 else threshold,
            short_operators=config["short_augmentations"],
        )

    def most_similar(self, items):
        """The item most similar to each of ``items`` (offline, or hybrid after the warm-up)."""
        return self.similar_item[items]

    def on_train_epoch_start(self, epoch_idx):
        """From the warm-up epoch on, refresh the hybrid similarity with the current item embeddings."""
        if epoch_idx < self.hybrid_warm_up_epochs:
            return
        online_id, online_score = similarity.embedding_top1(self.item_weights().detach())
        table = similarity.hybrid_table(self.offline_neighbour, self.offline_score, online_id, online_score)
        self.similar_item.copy_(table.to(self.similar_item.device))
        if self.hybrid_since is None:
            self.hybrid_since = epoch_idx
            getLogger().info(set_color("CoSeRec", "blue") + f": hybrid item similarity from epoch {epoch_idx}")
