"""The leak check and its undo: scanning trees and images for key material, scrubbing what the
kit wrote. Imports secrets (a key's forms) and core.
"""
