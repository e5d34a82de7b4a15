"""Stage 5, publication: an immutable, user_id-disjoint release built from the catalog.

- ``selection``: what goes into a release (images, boxes, links, earlier splits)
- ``splits``: user-disjoint, class-stratified, sticky split assignment
- ``published_image``: the bytes published for an image (upright, without metadata)
- ``containers``: JPEG / PNG / WebP read at the byte level (metadata stripped, members checked)
- ``shards``: WebDataset tar shards with every member's offset planned upfront
- ``assembly``: the parts computed from the samples (shard plans, exports, contract inputs)
- ``writer``: the staging folder and its one-step commit
- ``exports``: HaGRID, COCO and YOLO annotation files; the HaGRID folder layout
- ``data_card``: the release's README
- ``report``: the quality report (plots and tables)
"""
