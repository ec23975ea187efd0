"""The fetch: a build's access to private repos, sealed git, the mirrors in the build cache,
what fetched commits name in turn, the doctor. Imports secrets, manifests, core.
"""
