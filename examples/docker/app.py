"""The example app: it runs only if its private dependency was installed."""

import private_utils

print(private_utils.hello())
