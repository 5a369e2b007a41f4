"""The shape every analysis stage shares: AnnData in, annotated in place, a `StageResult` out.

Each stage's entry point (`texflow.qc.run_qc`, `texflow.gating.gate_cd8`,
`texflow.cluster.run_clustering`, `texflow.states.label_states`, `texflow.programs.analyse`)
takes the AnnData as its first argument, writes its annotations into it (the slots each names in
its docstring) and returns a `StageResult`: the stage's tables, by the name of the file each is
written to (``tables/<name>.tsv``), and the steps it did not run, each with its reason (the
entries it recorded in ``uns["texflow"]["skipped"]``, which later stages and the report read).

Shared by the stages and below them: no stage module is imported here.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from os import PathLike

import anndata as ad
import pandas as pd

from .errors import InputDataError

#: Organisms whose gene symbols and shipped programs texflow knows.
ORGANISMS = ("human", "mouse")


def texflow_uns(adata: ad.AnnData) -> dict:
    """``adata.uns["texflow"]``, created with empty ``params``/``skipped`` dicts when missing."""
    meta = adata.uns.setdefault("texflow", {})
    meta.setdefault("params", {})
    meta.setdefault("skipped", {})
    return meta


def organism_of(
    adata: ad.AnnData, *, dataset: str | None = None, path: str | PathLike | None = None
) -> str:
    """``uns["texflow"]["organism"]``; InputDataError naming the value when it is not one of
    `ORGANISMS`."""
    organism = texflow_uns(adata).get("organism")
    if organism not in ORGANISMS:
        raise InputDataError(
            f"uns['texflow']['organism'] is {organism!r}; expected human or mouse (set organism "
            "in the dataset config)",
            dataset=dataset or texflow_uns(adata).get("dataset"),
            path=path,
        )
    return organism


class SkipNotes(MutableMapping):
    """The steps a stage did not run, with their reasons, as it records them.

    Each entry is written through to ``uns["texflow"]["skipped"]`` at once (later steps of the
    stage, later stages and the report read it there) and kept in `recorded`, the stage's own
    notes for its `StageResult`. Reading falls back to every entry in uns (an earlier stage's
    too).
    """

    def __init__(self, adata: ad.AnnData) -> None:
        self._skipped: dict[str, str] = texflow_uns(adata)["skipped"]
        self.recorded: dict[str, str] = {}

    def __setitem__(self, step: str, reason: str) -> None:
        self._skipped[step] = reason
        self.recorded[step] = reason

    def __getitem__(self, step: str) -> str:
        return self._skipped[step]

    def __delitem__(self, step: str) -> None:
        del self._skipped[step]
        self.recorded.pop(step, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._skipped)

    def __len__(self) -> int:
        return len(self._skipped)


@dataclass
class StageResult:
    """What a stage's entry point returns beside the AnnData it annotated in place.

    Attributes
    ----------
    stage
        The stage's name (its rule and config section).
    tables
        The stage's tables by name: the rule writes each to ``tables/<name>.tsv`` (``.tsv.gz``
        for the per-cell tables).
    notes
        Steps not run in this call, each with its reason (the entries the stage wrote to
        ``uns["texflow"]["skipped"]``), in the order recorded.
    """

    stage: str
    tables: dict[str, pd.DataFrame]
    notes: dict[str, str] = field(default_factory=dict)
