"""Benchmarks of jpki-va against peers measured in the same run (see DESIGN.md, Performance)."""
