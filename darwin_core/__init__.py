"""Darwin Studio engine: training-free evolutionary merging of causal language models.

The package imports nothing heavy at start-up, so `darwin --help` stays fast; import the
submodules (`darwin_core.breed`, `darwin_core.evaluate`, ...) for the API.
"""

__version__ = "0.1.0"
