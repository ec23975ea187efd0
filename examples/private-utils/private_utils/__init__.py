"""A private package the example app depends on."""

__version__ = "1.0"


def hello() -> str:
    return "hello from private-utils 1.0, installed with a deploy key that is gone now"
