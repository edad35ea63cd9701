"""Saved models: one file per model, its metadata readable without reading its arrays, never unpickled.

Format 2 (this version) has the layout of safetensors: an 8-byte little-endian header length ``N``, ``N``
bytes of JSON, then the raw little-endian bytes of every array, back to back::

    {"__metadata__": {"format": "movierec-checkpoint", "format_version": "2",
                      "meta": "<JSON: model, config, dataset, fingerprint, split, seed, history, metrics, ...>",
                      "serving": "<JSON: genre names, neutral score, how the model scores (see serving.py)>"},
     "state.user_factors": {"dtype": "F32", "shape": [943, 32], "data_offsets": [0, 120704]}, ...}

The arrays are the model's ``state_dict`` (``state.*``), the MovieLens ids of every user and movie index
(``user_ids``, ``item_ids``) and what answering needs without the dataset (:mod:`movierec.serving`: each
user's training ratings, each movie's rating count, titles, years, genres). Listing reads the header alone;
answering reads only the arrays it needs (one user's row, not the 22M training ratings), with numpy; only
building a torch model imports torch. Nothing is ever unpickled: JSON and raw numbers only. The suffix stays
``.pt`` so names, paths and scripts keep working across the format change.

Format 1 files (a ``torch.save`` of plain tensors, read with ``torch.load(weights_only=True)``) are still
read; the first time one is used to answer or evaluate, it is rewritten in format 2 (atomically, in place),
since that is when the dataset its serving data comes from is at hand.

Everything read back is checked before it is used: the metadata field by field (:func:`meta_from_dict`,
which knows nothing of the container), the arrays against the metadata, and the id maps against the
dataset (:func:`load_trained`). A file that fails is "damaged", in one sentence, never a traceback.

Writers take a lock per name (``.NAME.lock``) for the whole train-and-save, write to a temporary file
named after their host and pid, and sweep away the temporaries of writers that died (kill -9).

The store, one concern per module, importing nothing of serving or the models' torch code (everything that
rebuilds a model is above it, in :mod:`movierec.loading`)::

    meta       CheckpointMeta and its field-by-field checks; the arrays checked against it
    container  the file format: header + raw arrays (writes and reads named arrays, nothing else)
    names      names, paths, per-name locks, temporaries of writers that died
    legacy     the format-1 reader (to be removed in movierec 0.3)
    files      whole checkpoints: save, read back, list, resolve a name
"""

from movierec.checkpoint.container import (
    FORMAT,
    FORMAT_VERSION,
    LEGACY_VERSION,
    MAX_HEADER,
    LegacyCheckpoint,
    SavedFile,
    is_legacy,
    open_file,
    write_file,
)
from movierec.checkpoint.files import (
    PIN_FILE,
    default_of,
    describe,
    describe_all,
    list_checkpoints,
    pinned,
    read_all,
    read_meta,
    remove,
    resolve,
    save,
    scan_checkpoints,
    set_default,
    write,
)
from movierec.checkpoint.meta import (
    MAX_NAME,
    CheckpointMeta,
    check_arrays,
    current_meta,
    meta_from_dict,
    plain_name,
)
from movierec.checkpoint.names import (
    STALE_SECONDS,
    SUFFIX,
    clean_temporaries,
    default_name,
    path_for,
    reserve,
    saved_names,
)

__all__ = [
    "FORMAT", "FORMAT_VERSION", "LEGACY_VERSION", "MAX_HEADER", "MAX_NAME", "plain_name", "STALE_SECONDS", "SUFFIX",
    "CheckpointMeta", "LegacyCheckpoint", "SavedFile", "check_arrays", "clean_temporaries", "current_meta",
    "default_name", "describe", "is_legacy", "list_checkpoints", "meta_from_dict", "open_file", "path_for",
    "read_all", "read_meta", "remove", "reserve", "resolve", "save", "saved_names", "scan_checkpoints", "write",
    "write_file", "PIN_FILE", "default_of", "describe_all", "pinned", "set_default",
]
