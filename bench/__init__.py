"""Benchmarks: the diff engine at millions of contacts, and syncs against Klaviyo's rate limits.

They print figures and ratios; ``scripts/test.sh`` runs them only at a tiny size, as a smoke check.
"""
