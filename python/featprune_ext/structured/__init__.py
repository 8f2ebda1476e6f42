"""Structured pruning: remove whole MLP channels, key/value groups, blocks and experts, so the output is a
smaller dense model every runtime runs faster. Pure pieces (spec, scores, surgery, recovery, experts) that
the streaming engine wires into its block loop; inmemory.py composes them for a model held whole in memory
(the benchmark and the tests' reference). Design and measurements: docs/structured.md."""

from .inmemory import Options, prune_in_memory, read_checkpoint, write_model
from .spec import StructuredPlan, StructuredSpec, parse_spec, validate
from .streaming import StructuredRequest

__all__ = ["Options", "StructuredPlan", "StructuredRequest", "StructuredSpec", "parse_spec", "prune_in_memory",
           "read_checkpoint", "validate", "write_model"]
