"""Inference for users: `segmenter.Segmenter` (re-exported lazily as `jaxseg.Segmenter`).

Nothing is imported here, so that `import jaxseg` stays cheap; the tiled / multi-scale engine
itself still lives in jaxseg/inference/sliding.py until the package split of issue 16.
"""
