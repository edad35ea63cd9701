"""MovieLens data: the registry of releases, downloads, parsing, ratings matrices and splits."""
