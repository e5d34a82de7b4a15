"""Stages 2 and 3, crowd validation and ethical filtration (and the machinery annotation reuses).

- ``answers``: raw crowd answers screened into canonical answers or recorded rejections
- ``consensus``: worker quality and one verdict per image (crowd-kit)
- ``queue``: what happens next to each image (decide, wait, re-queue, review)
- ``backends``: the crowd adapter (answer files; Label Studio lives in ``annotation_ui``)
- ``stage``: one cycle of a stage over the catalog (pull, decide, push)
- ``report``: the stage report
"""
