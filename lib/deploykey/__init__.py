"""deploykey: install private git dependencies in builds with a deploy key that never reaches the release.

The command line is `deploykey` (cli.py); the buildpack hooks in bin/ call it. Public API:
`secrets.keys.load` (validate a key), `leak.scan.scan` (search a tree for a key), `__version__`.
"""

__version__ = "0.1.0"
