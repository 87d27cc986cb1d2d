"""Sweeps: a grid of models × modes × options, each cell one job run in local worker processes or as
Ray tasks, the results in the store, and the Pareto front with a recommended cell as the answer.

``grid`` (models, cells and their keys), ``job`` (one cell, where a worker is), ``runners`` (local
processes, Ray), ``run`` (:func:`edgeq.sweep`, the driver), ``report`` (fronts, recommendation, files).
"""
