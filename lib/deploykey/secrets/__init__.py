"""Keys, tokens and the GitHub App, and how they reach git: settings (config), key material in
memory (agent) or on disk (keydir), ssh config, pinned host keys, routing. Imports core and
manifests.
"""
