"""Figures of every stage, one submodule per stage family (qc, clusters, states, trajectory,
report).

Every function takes an AnnData (or a table) and a path, draws one figure with a title, axis
labels, units and a legend, and saves it atomically as PNG (and SVG when asked).
"""
