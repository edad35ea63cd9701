"""movierec: movie recommendations on the MovieLens data sets.

Importing the package is cheap: torch and pandas are imported only by the modules that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
