"""Named preference sources and local files, loaded through `datasets` into validated examples.

Entry point: :func:`load_preferences`. A source is one of

- a registered name (:data:`SOURCES`): read from the Hugging Face Hub, or, with ``data_files=``, from local
  json/jsonl(.gz)/parquet files in that source's format (nothing is downloaded then);
- a path to a local ``.json``/``.jsonl``/``.json.gz``/``.jsonl.gz``/``.parquet`` file or to a
  ``Dataset.save_to_disk`` directory (format ``preference`` unless ``format=`` says otherwise);
- an in-memory ``datasets.Dataset`` or a list of row dicts.

``fields={"prompt": "question", ...}`` maps the format's field names onto the columns that hold them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .formats import FORMATS, detect_format
from .local_files import JSON_SUFFIXES, PARQUET_SUFFIXES, DataFileError, read_rows
from .schema import (
    ON_BAD_ROW,
    BadRow,
    DataReport,
    DataValidationError,
    PreferenceExample,
    consecutive_same_role,
    validate_example,
)


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A registered source: its row format and the splits it publishes."""

    name: str
    format: str
    splits: tuple[str, ...]
    description: str


SOURCES: dict[str, SourceSpec] = {
    s.name: s
    for s in (
        SourceSpec("redsgnaoh/orcaratgen", "rationale", ("train", "test"),
                   "Orca pairs with general rationales (12,000 train / 854 test)"),
        SourceSpec("redsgnaoh/orcaratspec", "rationale", ("train", "test"),
                   "Orca pairs with detailed rationales"),
        SourceSpec("Intel/orca_dpo_pairs", "orca_dpo_pairs", ("train",),
                   "Orca DPO pairs (12,859 rows; system, question, chosen, rejected)"),
        SourceSpec("HuggingFaceH4/ultrafeedback_binarized", "ultrafeedback", ("train_prefs", "test_prefs"),
                   "UltraFeedback binarized preference splits (message lists)"),
        SourceSpec("Anthropic/hh-rlhf", "hh", ("train", "test"),
                   "Anthropic HH-RLHF transcripts (pass data_dir='harmless-base' etc. for a subset)"),
    )
}

def _unknown_source(source: str) -> ValueError:
    names = "\n  ".join(f"{s.name} ({s.description})" for s in SOURCES.values())
    return ValueError(
        f"unknown source {source!r}. Accepted names:\n  {names}\nor a path to a local "
        f"{'/'.join(JSON_SUFFIXES + PARQUET_SUFFIXES)} file or a Dataset.save_to_disk directory, "
        f"or any Hub dataset with format= set explicitly (one of {sorted(FORMATS)})."
    )


def _unknown_split(dataset: str, split: str, available: Sequence[str]) -> ValueError:
    return ValueError(f"dataset {dataset!r} has no split {split!r}; available splits: {list(available)}")


def _pick_split(obj: Any, dataset: str, split: str) -> Any:
    """A Dataset from a DatasetDict (error listing the splits), or the Dataset itself."""
    import datasets

    if isinstance(obj, datasets.DatasetDict):
        if split not in obj:
            raise _unknown_split(dataset, split, list(obj))
        return obj[split]
    return obj


def _split_files(data_files: Any, split: str, dataset: str) -> list[str]:
    """The files of ``split``: a str or list is the requested split itself, a dict maps split -> files."""
    if isinstance(data_files, Mapping):
        if split not in data_files:
            raise _unknown_split(dataset, split, list(data_files))
        files = data_files[split]
    else:
        files = data_files
    file_list = [str(files)] if isinstance(files, str | os.PathLike) else [str(f) for f in files]
    if not file_list:
        raise ValueError(f"data_files for {dataset!r} is empty")
    return file_list


def _load_local_files(data_files: Any, split: str, dataset: str, load_kwargs: dict[str, Any]) -> list[dict]:
    """Rows of local json/jsonl(.gz)/parquet files (`read_rows`: errors name the file and line), in order."""
    other = sorted(k for k in load_kwargs if k != "cache_dir")  # a cache location cannot change what is read
    if other:
        raise TypeError(f"keyword(s) {', '.join(other)} go to datasets.load_dataset (Hub sources); local files "
                        f"for {dataset!r} are read directly and take none")
    rows: list[dict] = []
    for f in _split_files(data_files, split, dataset):
        rows += read_rows(f)
    return rows


def _load_path(path: Path, split: str, load_kwargs: dict[str, Any]) -> Any:
    """A local file (json/parquet) or a save_to_disk directory."""
    import datasets

    if path.is_dir():
        markers = ("dataset_info.json", "state.json", "dataset_dict.json")
        if not any((path / m).exists() for m in markers):
            raise DataFileError(path, f"a directory but not a Dataset.save_to_disk directory (none of {markers})")
        try:
            saved = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - any failure to read the saved set names the directory
            raise DataFileError(path, f"datasets.load_from_disk cannot read it ({type(e).__name__}: "
                                      f"{str(e)[:300]}): truncated or incomplete?") from None
        return _pick_split(saved, str(path), split)
    return _load_local_files(str(path), split, str(path), load_kwargs)


def source_identity(source: Any, split: str, data_files: Any = None) -> tuple | None:
    """What ``load_preferences(source, split=split, data_files=data_files)`` reads, comparable between calls:
    the real paths of the files (a file or a data_files list is every split at once), a save_to_disk
    directory and split (when it holds several), or a Hub name and split; None for in-memory sources."""
    if not isinstance(source, str | os.PathLike):
        return None
    key = str(source)
    if data_files is not None:
        return ("files", tuple(sorted(os.path.realpath(f) for f in _split_files(data_files, split, key))))
    path = Path(key)
    if key not in SOURCES and path.exists():
        if path.is_dir():
            whole = not (path / "dataset_dict.json").exists()
            return ("saved", os.path.realpath(path), None if whole else split)
        return ("files", (os.path.realpath(path),))
    return ("hub", key, split)


def _load_hub(name: str, split: str, spec: SourceSpec | None, load_kwargs: dict[str, Any]) -> Any:
    import datasets

    if spec is not None and split not in spec.splits:
        raise _unknown_split(name, split, spec.splits)
    try:
        return datasets.load_dataset(name, split=split, **load_kwargs)
    except (ConnectionError, OSError) as e:
        raise OSError(
            f"could not load {name!r} (split {split!r}) from the Hugging Face Hub or its cache: {e}. "
            f"Offline, pass data_files= with local copies in the same format."
        ) from e


def _apply_fields(rows_columns: Sequence[str], fields: Mapping[str, str] | None, fmt: str,
                  dataset: str) -> dict[str, str]:
    """Check ``fields`` and the columns; return canonical name -> column for every field the format reads."""
    _, required, optional = FORMATS[fmt]
    accepted = required + optional
    fields = dict(fields or {})
    unknown = [k for k in fields if k not in accepted]
    if unknown:
        raise ValueError(
            f"fields= keys {unknown} are not fields of format {fmt!r}; accepted keys: {list(accepted)}"
        )
    columns = set(rows_columns)
    for key, col in fields.items():
        if col not in columns:
            raise ValueError(f"fields maps {key!r} to column {col!r}, which {dataset!r} does not have; "
                             f"columns: {sorted(columns)}")
    mapping = {k: fields.get(k, k) for k in accepted}
    absent = [k for k in required if mapping[k] not in columns]
    if absent:
        raise ValueError(
            f"dataset {dataset!r} has no column for required field(s) {absent} of format {fmt!r}; columns: "
            f"{sorted(columns)}. Map them with fields={{'{absent[0]}': '<column>', ...}}."
        )
    return {k: c for k, c in mapping.items() if c in columns}


def convert_rows(
    rows: Any,
    *,
    format: str = "preference",
    dataset: str = "<in-memory>",
    split: str = "train",
    fields: Mapping[str, str] | None = None,
    on_bad_row: str = "error",
    origin: str = "",
) -> tuple[list[PreferenceExample], DataReport]:
    """Convert and validate raw rows (a ``datasets.Dataset`` or a list of dicts) of one format.

    Every row is checked; under ``on_bad_row="error"`` one :class:`DataValidationError` lists all bad rows
    (dataset, row, field, reason), under ``"skip"`` they are dropped and counted in the report.
    """
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"on_bad_row={on_bad_row!r}; accepted: {list(ON_BAD_ROW)}")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; accepted: {sorted(FORMATS)}")
    convert = FORMATS[format][0]
    if hasattr(rows, "column_names"):
        columns = list(rows.column_names)
    else:
        rows = list(rows)
        columns = sorted({k for r in rows if isinstance(r, Mapping) for k in r})
    mapping = _apply_fields(columns, fields, format, dataset)

    report = DataReport(dataset=dataset, split=split, origin=origin, format=format, columns=list(columns),
                        fields=dict(mapping))
    examples: list[PreferenceExample] = []
    same_role: list[int] = []
    for i, raw in enumerate(rows):
        report.n_rows += 1
        if not isinstance(raw, Mapping):
            report.bad_rows.append(BadRow(dataset, i, "<row>", "malformed", f"got {type(raw).__name__}"))
            continue
        values, problems = convert({k: raw.get(c) for k, c in mapping.items()})
        problems += validate_example(values.get("prompt"), values.get("chosen"), values.get("rejected"),
                                     values.get("rationale"))
        if format == "rationale" and values.get("rationale") is None:
            problems.append(("rationale", "missing_field", "absent or null"))
        if problems:
            report.bad_rows += [BadRow(dataset, i, mapping.get(f, f), r, d) for f, r, d in problems]
            continue
        ex = PreferenceExample(
            values["prompt"], values["chosen"], values["rejected"], values.get("rationale")
        )
        if consecutive_same_role(ex.prompt):
            same_role.append(i)
        examples.append(ex)
        report.kept_rows.append(i)
    report.n_kept = len(examples)
    if same_role:
        report.flags["consecutive_same_role"] = same_role
    if report.bad_rows and (on_bad_row == "error" or not examples):
        raise DataValidationError(dataset, split, report.n_rows, report.bad_rows, origin,
                                  all_skipped=on_bad_row == "skip")
    return examples, report


def load_preferences(
    source: Any,
    *,
    split: str = "train",
    data_files: Any = None,
    on_bad_row: str = "error",
    fields: Mapping[str, str] | None = None,
    format: str | None = None,
    name: str | None = None,
    **load_kwargs: Any,
) -> tuple[list[PreferenceExample], DataReport]:
    """Load a preference source into validated :class:`PreferenceExample` s and a :class:`DataReport`.

    Args:
      source: a name in :data:`SOURCES`, a local file / ``save_to_disk`` directory path, a Hub dataset
        name with ``format=`` given, a ``datasets.Dataset``/``DatasetDict``, or a list of row dicts.
      split: which split. With ``data_files`` a string or list, those files are the split whatever its name;
        with a dict, ``split`` must be one of its keys. Unknown splits raise, listing the available ones.
      data_files: local json/jsonl(.gz)/parquet file(s) in the named source's format (no download).
      on_bad_row: ``"error"`` (raise :class:`DataValidationError` naming every bad row) or ``"skip"``.
      fields: canonical field -> column, e.g. ``{"prompt": "question", "rationale": "why"}``.
      format: row format (one of ``FORMATS``); defaults to the named source's, else detected from the
        columns and the first row (:func:`~rdpo_jax.data.formats.detect_format`; the report says which).
      name: dataset name used in reports and errors (defaults to the source name or path).
      **load_kwargs: passed to ``datasets.load_dataset`` (``cache_dir``, ``data_dir``, ``revision``, ...).

    Returns:
      ``(examples, report)``: the kept examples in row order, and what was read, kept and skipped.
    """
    import datasets

    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; accepted: {sorted(FORMATS)}")
    fmt = format
    if isinstance(source, datasets.Dataset | datasets.DatasetDict | list | tuple):
        dataset = name or "<in-memory>"
        rows = _pick_split(source, dataset, split)
    elif isinstance(source, str | os.PathLike):
        key = str(source)
        spec = SOURCES.get(key)
        dataset = name or key
        if spec is not None:
            fmt = format or spec.format
            if data_files is not None:
                rows = _load_local_files(data_files, split, dataset, load_kwargs)
            else:
                rows = _load_hub(key, split, spec, load_kwargs)
        elif data_files is not None:
            rows = _load_local_files(data_files, split, dataset, load_kwargs)
        elif Path(key).exists():
            rows = _load_path(Path(key), split, load_kwargs)
        elif format is not None and not Path(key).suffix and key.count("/") == 1:
            rows = _load_hub(key, split, None, load_kwargs)
        else:
            raise _unknown_source(key)
    else:
        raise TypeError(f"source must be a name, a path, a datasets.Dataset or a list of dicts; got "
                        f"{type(source).__name__}")
    if fmt is None:
        sample = [rows[i] for i in range(min(100, len(rows)))]
        fmt = detect_format(sample, fields)
    origin = _describe_files(data_files, split) if data_files is not None else ""
    return convert_rows(rows, format=fmt, dataset=dataset, split=split, fields=fields, on_bad_row=on_bad_row,
                        origin=origin)


def _describe_files(data_files: Any, split: str) -> str:
    """Short text naming the local files a split was read from (for reports and errors)."""
    files = data_files[split] if isinstance(data_files, Mapping) else data_files
    files = [files] if isinstance(files, str | os.PathLike) else list(files)
    return ", ".join(str(f) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
