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

from .batching import BatchPlan, Buckets, make_batch, packed_batch, pad_id_for, rows_per_pair, three_row_batch
from .chat import (
    LLAMA3_CHAT_TEMPLATE,
    MISTRAL_V1_CHAT_TEMPLATE,
    MISTRAL_V3_CHAT_TEMPLATE,
    ChatStats,
    encode_chat,
    prepare_messages,
    render_chat,
)
from .formats import FORMATS, parse_hh_transcript
from .iteration import Batch, BatchIterator, epoch_permutation
from .packing import PackedRow, pack_rows, packed_length, tree_attention_mask, unpacked_length
from .rationale_templates import TEMPLATES, WORDINGS, RationaleWording, rationale_messages
from .rows import (
    RowStats,
    TokenizedExample,
    TokenizeResult,
    TokenSeq,
    TruncationConfig,
    tokenize_example,
    tokenize_examples,
)
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
from .tokenizers import llama3_tokenizer, load_tokenizer, mistral_tokenizer

__all__ = [
    "LLAMA3_CHAT_TEMPLATE",
    "MISTRAL_V1_CHAT_TEMPLATE",
    "MISTRAL_V3_CHAT_TEMPLATE",
    "TEMPLATES",
    "WORDINGS",
    "BatchPlan",
    "Buckets",
    "ChatStats",
    "PackedRow",
    "RationaleWording",
    "RowStats",
    "TokenSeq",
    "TokenizeResult",
    "TokenizedExample",
    "TruncationConfig",
    "encode_chat",
    "llama3_tokenizer",
    "load_tokenizer",
    "make_batch",
    "mistral_tokenizer",
    "pack_rows",
    "packed_batch",
    "packed_length",
    "pad_id_for",
    "rows_per_pair",
    "prepare_messages",
    "rationale_messages",
    "render_chat",
    "three_row_batch",
    "tokenize_example",
    "tokenize_examples",
    "tree_attention_mask",
    "unpacked_length",
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
