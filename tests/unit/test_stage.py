"""texflow.stage: the shape every stage entry point shares, and the notes a stage records."""

import anndata as ad
import numpy as np
import pytest
from texflow.errors import InputDataError
from texflow.stage import SkipNotes, organism_of, texflow_uns


def test_skip_notes_write_through_and_keep_only_this_stages():
    adata = ad.AnnData(np.zeros((2, 2)))
    adata.uns["texflow"] = {"skipped": {"earlier": "an earlier stage's note"}}
    notes = SkipNotes(adata)
    notes["b.step"] = "why b"
    notes["a.step"] = "why a"
    skipped = adata.uns["texflow"]["skipped"]
    # written to uns at once, after the earlier entries, in the order recorded
    assert list(skipped) == ["earlier", "b.step", "a.step"]
    assert notes.recorded == {"b.step": "why b", "a.step": "why a"}
    assert list(notes.recorded) == ["b.step", "a.step"]
    # reading sees every entry, an earlier stage's too; the stage's own notes stay its own
    assert notes.get("earlier") == "an earlier stage's note" and "earlier" not in notes.recorded
    assert notes.get("absent", "default") == "default"
    del notes["b.step"]
    assert "b.step" not in skipped and "b.step" not in notes.recorded


def test_texflow_uns_and_organism():
    adata = ad.AnnData(np.zeros((2, 2)))
    assert texflow_uns(adata) == {"params": {}, "skipped": {}}
    with pytest.raises(InputDataError, match="organism.*None.*expected human or mouse"):
        organism_of(adata, dataset="demo")
    adata.uns["texflow"]["organism"] = "mouse"
    assert organism_of(adata) == "mouse"
