"""Pseudo-label stages (paper §4.2): plain functions with a CLI each; no Snakemake imports.

``flow``: optical flow -> mean magnitude over a GxG grid -> top-k cell indices per frame.
"""
