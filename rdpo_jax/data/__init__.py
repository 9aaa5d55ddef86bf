"""Data: the preference-example schema, validated sources, per-process iteration, synthetic tasks.

Public API:

- :class:`PreferenceExample`, :class:`DataReport`, :class:`BadRow`, :class:`DataValidationError`
- :func:`load_preferences` (named sources, local files, ``save_to_disk`` directories), :func:`convert_rows`,
  :data:`SOURCES`, :data:`FORMATS`
- :class:`BatchIterator`, :class:`Batch`, :func:`epoch_permutation`
- synthetic tasks: :class:`SyntheticTask`, :class:`SyntheticPair`, :class:`Oracle`,
  :func:`rationale_information`, :func:`conditional_rationale_information`, :func:`empirical_information`,
  :func:`plugin_mutual_information`, :func:`shuffle_rationales`, :func:`synthetic_tokenizer`
"""

from .formats import FORMATS, parse_hh_transcript
from .iteration import Batch, BatchIterator, epoch_permutation
from .schema import (
    REASONS,
    ROLES,
    BadRow,
    DataReport,
    DataValidationError,
    Message,
    PreferenceExample,
    validate_example,
)
from .sources import SOURCES, SourceSpec, convert_rows, load_preferences
from .synthetic import (
    Oracle,
    SyntheticPair,
    SyntheticTask,
    binary_entropy,
    conditional_rationale_information,
    empirical_information,
    plugin_mutual_information,
    rationale_information,
    shuffle_rationales,
)
from .synthetic_vocab import synthetic_tokenizer

__all__ = [
    "FORMATS",
    "REASONS",
    "ROLES",
    "SOURCES",
    "BadRow",
    "Batch",
    "BatchIterator",
    "DataReport",
    "DataValidationError",
    "Message",
    "Oracle",
    "PreferenceExample",
    "SourceSpec",
    "SyntheticPair",
    "SyntheticTask",
    "binary_entropy",
    "conditional_rationale_information",
    "convert_rows",
    "empirical_information",
    "epoch_permutation",
    "load_preferences",
    "parse_hh_transcript",
    "plugin_mutual_information",
    "rationale_information",
    "shuffle_rationales",
    "synthetic_tokenizer",
    "validate_example",
]
