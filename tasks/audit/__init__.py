"""The label audit (``hagrid audit``): labels of a release that models which never saw the
person disagree with, found by cleanlab from out-of-fold predictions.

``folds`` splits the images by person, ``release`` reads every split of a release as one
table of hands, ``oof`` trains one model per fold and predicts the held-out fold, ``issues``
decides which labels to flag (pure functions over arrays) and shapes the catalog rows.
"""
