"""featprune trim: cut a model's vocabulary to the languages it serves, losslessly by default.

    from featprune_ext.trim import trim
    trim("model/", "model-es-en/", langs="es,en")                       # every token of Latin text
    trim("model/", "small/", langs="es,en", keep="corpus", data=["corpus/"], max_tokens=30000)

Modules: scripts (language -> Unicode scripts, the per-token test), tokenizer_edit (tokenizer.json per
family: merges, closure, renumbering), select (the keep sets and corpus coverage), write (the model
directory: gathered vocabulary rows, everything else byte for byte), api (the whole run).
"""

from __future__ import annotations

from .api import KEEP_MODES, trim

__all__ = ["KEEP_MODES", "trim"]
