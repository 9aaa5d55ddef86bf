"""Rationale annotation: make rationales for any preference set (`annotate`, ``rdpo-jax annotate``) with a
local model or an OpenAI-compatible endpoint (`LocalGenerator`, `EndpointGenerator`), check them
(`rdpo_jax.annotate.checks`) and write the kept pairs in the orcaratgen schema (`write_annotated`), which
`rdpo_jax.data.load_preferences` reads back."""
from rdpo_jax.annotate.annotator import AnnotateOptions, Annotation, annotate
from rdpo_jax.annotate.checks import CHECKS, POLICIES, resolve_policies
from rdpo_jax.annotate.generators import EndpointGenerator, Generator, LocalGenerator
from rdpo_jax.annotate.output import read_annotated, write_annotated
from rdpo_jax.annotate.templates import BUILT_IN, SUPPORT, AnnotationTemplate, load_annotation_template

__all__ = ["BUILT_IN", "CHECKS", "POLICIES", "SUPPORT", "AnnotateOptions", "Annotation", "AnnotationTemplate",
           "EndpointGenerator", "Generator", "LocalGenerator", "annotate", "load_annotation_template",
           "read_annotated", "resolve_policies", "write_annotated"]
