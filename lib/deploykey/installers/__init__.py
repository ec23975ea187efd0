"""Installing from the mirrors: choosing pip/uv/Poetry/Pipenv, running it, kept environments.
Imports fetch, leak, secrets, manifests, kit, core.
"""
