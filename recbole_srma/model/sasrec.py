"""PluginSASRec: SASRec (Kang & McAuley, ICDM 2018) on the plugin's encoder and fast path."""

from recbole_srma.model.recommender import SequentialBackboneRecommender


class PluginSASRec(SequentialBackboneRecommender):
    """RecBole's SASRec model (same parameters, same scores given the same weights, tests/test_backbone.py) and loss
    (full-softmax CE), computed by the plugin's fast path.

    It is the one-view baseline of the speed benchmark (docs/performance.md) and a faster drop-in for
    ``--model=SASRec``, which runs RecBole's own implementation. Deviation from RecBole's SASRec: the item table
    carries the unused mask-token row of every plugin model.
    """
