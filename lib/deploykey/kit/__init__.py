"""The kit itself: its own dependencies (bootstrap: pinned wheels, sealed bytecode) and the kit
as files to hand out (the pyz, the scan buildpack). Imports core only.
"""
