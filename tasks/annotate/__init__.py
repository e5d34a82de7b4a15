"""Stage 4, annotation: hand boxes and the leading hand.

- ``boxes``: Label Studio results in and out, checks, the canonical box answer
- ``consensus``: several annotators' boxes -> one box set, with agreement and leading_conf
- ``stage``: the annotation stage's decisions on top of the crowd stage cycle
- ``hagrid_import``: a dataset in the published HaGRID layout as final or pre-annotations
"""
