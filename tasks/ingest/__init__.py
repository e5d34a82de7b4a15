"""Stage 1, mining ingestion: submissions in, accepted unique images and a reason for the rest.

- ``intake``: read a submissions table, plan what each input needs (no image I/O)
- ``inspection``: decode once (small), orient, check, compute the dedup features
- ``hash_index``: exact Hamming-radius search over 64-bit perceptual hashes
- ``dedup``: exact and near-duplicate decisions against the catalog and the batch
- ``steps``: the flow's chunk work (inspect, decide a window, commit it)
- ``summary``: the run summary (counts per outcome and reason, duplicate pairs)
"""
