"""Render and store Measurements: terminal table, JSON, Markdown, flame graphs, baseline.

Nothing here counts anything, imports pytest, or imports torch at module import.
"""
