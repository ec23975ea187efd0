"""The plumbing every other package uses: errors (all wording), output (the only writer),
run (the only process starter), child environments, permissions, config sources, TLS trust,
marked blocks. Imports nothing of deploykey outside core.
"""
