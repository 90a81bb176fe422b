"""Rendering: HTML tables, topology drawings, latency plots and reports.

Renderers take core objects and plain result data and return strings or figures; they never
import :mod:`hybridnb.lab`.  Result objects call them lazily from ``_repr_html_``.
"""
