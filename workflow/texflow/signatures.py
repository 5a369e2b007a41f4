"""Gene programs (signatures): loading the shipped lists, user lists, symbol aliases, coverage.

The shipped programs live in `resources/signatures/programs.tsv` (long format, one row per gene:
program, direction, human, mouse, source, version, notes; see `resources/signatures/README.md`).
Old gene symbols are resolved through `resources/signatures/aliases.tsv`.

Typical use::

    programs = load_programs("human")
    programs = resolve_aliases(programs, adata.var_names, organism="human")
    coverage = coverage_table(programs, adata.var_names)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from .contract import (
    DIRECTION,
    FRACTION,
    FRACTION_UP,
    MISSING,
    N_GENES,
    N_PRESENT,
    N_UP,
    N_UP_PRESENT,
    NO_ORTHOLOG,
    PROGRAM,
    SOURCE,
    TRUSTED,
)
from .errors import InputDataError, TexflowError

logger = logging.getLogger(__name__)

ORGANISMS = ("human", "mouse")
SIGNATURES_DIR = Path(__file__).resolve().parents[2] / "resources" / "signatures"
PROGRAMS_TSV = SIGNATURES_DIR / "programs.tsv"
ALIASES_TSV = SIGNATURES_DIR / "aliases.tsv"

# A score is trusted when at least half of its positive genes, and at least 3 of them, are
# measured. UCell's rank statistic stays defined with fewer genes, but with 1-2 genes it becomes a
# single-gene detection call, and below half the published list it no longer measures the
# published program (the same spirit as decoupler's `tmin` and UCell's missing-gene warning).
MIN_FRACTION_TRUSTED = 0.5
MIN_GENES_TRUSTED = 3


@dataclass(frozen=True)
class GeneProgram:
    """A gene program: positive genes, optional negative genes, and where it comes from.

    Attributes
    ----------
    name
        Program name (e.g. ``"tpex"``); scores are written as ``score_<name>``.
    up
        Genes expected high in the cells the program describes (symbols of one organism).
    down
        Negative markers, expected low (UCell's ``GENE-`` notation).
    source
        Paper / database and version the genes come from.
    no_ortholog
        Genes of the source list that have no symbol in this organism (kept for reporting).
    """

    name: str
    up: tuple[str, ...]
    down: tuple[str, ...] = ()
    source: str = ""
    no_ortholog: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "up", _unique(self.up))
        object.__setattr__(self, "down", tuple(g for g in _unique(self.down) if g not in self.up))
        object.__setattr__(self, "no_ortholog", _unique(self.no_ortholog))

    @property
    def genes(self) -> tuple[str, ...]:
        """All genes, positive first."""
        return self.up + self.down


def _unique(genes: Iterable[str]) -> tuple[str, ...]:
    """Genes in first-seen order without duplicates or empty strings (XCL1/XCL2 -> Xcl1 twice)."""
    return tuple(dict.fromkeys(g.strip() for g in genes if g and g.strip()))


def _check_organism(organism: str) -> str:
    if organism not in ORGANISMS:
        raise TexflowError(f"organism must be one of {ORGANISMS}, not {organism!r}")
    return organism


def load_programs(
    organism: str,
    *,
    path: str | os.PathLike | None = None,
    extra: str | os.PathLike | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, GeneProgram]:
    """Load gene programs with the symbols of `organism`.

    Parameters
    ----------
    organism
        ``"human"`` or ``"mouse"``: which symbol column of the TSV is used.
    path
        Programs TSV; defaults to the shipped `resources/signatures/programs.tsv`.
    extra
        A user file of further programs (same names override shipped ones, with a warning):
        a TSV in the same format (columns ``program``, optional ``direction`` (up/down, default
        up), ``human``/``mouse`` or ``gene``, optional ``source``), or a YAML file mapping
        ``name -> [genes]`` (UCell notation: a trailing ``-`` marks a negative gene, ``+`` is
        ignored) or ``name -> {up: [...], down: [...], source: ...}``. YAML genes are used as
        written, in the organism of the dataset.
    names
        Keep only these programs (in this order); unknown names raise `TexflowError`.

    Returns
    -------
    Programs by name.
    """
    _check_organism(organism)
    programs = _read_tsv(Path(path) if path is not None else PROGRAMS_TSV, organism)
    if extra is not None:
        extra = Path(extra)
        if extra.suffix.lower() in (".yaml", ".yml"):
            added = _read_yaml(extra)
        else:
            added = _read_tsv(extra, organism)
        for name in added.keys() & programs.keys():
            logger.warning(
                "program %r from %s replaces the shipped program of that name", name, extra
            )
        programs.update(added)
    if names is not None:
        names = list(names)
        unknown = [n for n in names if n not in programs]
        if unknown:
            raise TexflowError(f"unknown gene program(s) {unknown}; known: {sorted(programs)}")
        programs = {n: programs[n] for n in names}
    return programs


def _read_tsv(path: Path, organism: str) -> dict[str, GeneProgram]:
    if not path.is_file():
        raise InputDataError("gene program table does not exist", path=path)
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    symbol_column = organism if organism in frame.columns else "gene"
    missing = {"program", symbol_column} - set(frame.columns)
    if missing:
        raise InputDataError(
            f"gene program table lacks column(s) {sorted(missing)} (needs 'program' and "
            f"'{organism}' or 'gene')",
            path=path,
        )
    if DIRECTION not in frame.columns:
        frame[DIRECTION] = "up"
    bad = set(frame[DIRECTION]) - {"up", "down"}
    if bad:
        raise InputDataError(f"direction must be 'up' or 'down', found {sorted(bad)}", path=path)
    programs = {}
    for name, rows in frame.groupby(PROGRAM, sort=False):
        up, down, no_ortholog = [], [], []
        for row in rows.itertuples(index=False):
            symbols = [s.strip() for s in getattr(row, symbol_column).split(";") if s.strip()]
            if not symbols:
                # a gene of the source list without a symbol in this organism (e.g. IFI6 in mouse)
                no_ortholog.append(getattr(row, "human", "") or "?")
            (up if row.direction == "up" else down).extend(symbols)
        sources = rows[SOURCE].unique() if SOURCE in rows.columns else [""]
        programs[name] = GeneProgram(
            name=name,
            up=tuple(up),
            down=tuple(down),
            source="; ".join(s for s in sources if s),
            no_ortholog=tuple(no_ortholog),
        )
        if not programs[name].up:
            raise InputDataError(
                f"program {name!r} has no positive ('up') gene for {organism}", path=path
            )
    return programs


def _read_yaml(path: Path) -> dict[str, GeneProgram]:
    import yaml

    from .configuration import UniqueKeyLoader

    if not path.is_file():
        raise InputDataError("gene program file does not exist", path=path)
    try:
        # a program named twice would silently replace the first: refused
        data = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise InputDataError(f"not valid YAML: {error}", path=path) from None
    if not isinstance(data, dict):
        raise InputDataError("must map program names to gene lists", path=path)
    programs = {}
    for name, spec in data.items():
        source = f"user file {path.name}"
        if isinstance(spec, dict):
            up, down = list(spec.get("up", [])), list(spec.get("down", []))
            source = str(spec.get("source", source))
        elif isinstance(spec, list):
            up = [str(g).rstrip("+") for g in spec if not str(g).endswith("-")]
            down = [str(g)[:-1] for g in spec if str(g).endswith("-")]
        else:
            raise InputDataError(
                f"program {name!r}: expected a list of genes or {{up, down}}", path=path
            )
        if not up:
            raise InputDataError(f"program {name!r} has no positive gene", path=path)
        programs[str(name)] = GeneProgram(
            name=str(name), up=tuple(up), down=tuple(down), source=source
        )
    return programs


def read_aliases(
    organism: str | None = None, *, path: str | os.PathLike | None = None
) -> pd.DataFrame:
    """The alias table (columns organism, alias, current, note), optionally of one organism."""
    table = pd.read_csv(path or ALIASES_TSV, sep="\t", dtype=str, keep_default_na=False)
    if organism is not None:
        table = table[table["organism"] == _check_organism(organism)]
    return table.reset_index(drop=True)


def resolve_aliases(
    programs: Mapping[str, GeneProgram],
    var_names: Iterable[str],
    *,
    organism: str | None = None,
    aliases_path: str | os.PathLike | None = None,
) -> dict[str, GeneProgram]:
    """Rename program genes to the symbols the dataset uses, through the alias table.

    A program gene absent from `var_names` is replaced by one of its other symbols (old -> current
    or current -> old) when exactly that one is present, e.g. WARS1 -> WARS in a matrix built
    with old symbols. Genes found neither way are left as they are (reported as missing by
    `coverage_table`).

    Returns
    -------
    New programs; each renaming is logged.
    """
    present = set(map(str, var_names))
    table = read_aliases(organism, path=aliases_path)
    others: dict[str, set[str]] = {}
    for alias, current in zip(table["alias"], table["current"], strict=True):
        others.setdefault(current, set()).add(alias)
        others.setdefault(alias, set()).add(current)

    def rename(gene: str, program: str) -> str:
        if gene in present:
            return gene
        found = sorted(others.get(gene, set()) & present)
        if len(found) == 1:
            logger.info("program %s: %s is called %s in this dataset", program, gene, found[0])
            return found[0]
        return gene

    return {
        name: replace(
            program,
            up=tuple(rename(g, name) for g in program.up),
            down=tuple(rename(g, name) for g in program.down),
        )
        for name, program in programs.items()
    }


def coverage_table(
    programs: Mapping[str, GeneProgram],
    var_names: Iterable[str],
    *,
    min_fraction: float = MIN_FRACTION_TRUSTED,
    min_genes: int = MIN_GENES_TRUSTED,
) -> pd.DataFrame:
    """How much of each program the dataset measures, and whether its score can be trusted.

    Parameters
    ----------
    programs
        Programs (after `resolve_aliases`).
    var_names
        The dataset's gene symbols.
    min_fraction, min_genes
        A program is ``trusted`` when at least `min_fraction` of its positive genes, and at least
        `min_genes` of them (or all of them, for shorter lists), are present.

    Returns
    -------
    One row per program: program, n_genes, n_present, fraction (all genes), n_up, n_up_present,
    fraction_up, missing (comma-separated), no_ortholog (genes of the source list without a
    symbol in this organism), trusted, source.
    """
    present = set(map(str, var_names))
    rows = []
    for name, program in programs.items():
        genes = program.genes
        up_present = [g for g in program.up if g in present]
        n_present = sum(g in present for g in genes)
        fraction_up = len(up_present) / len(program.up) if program.up else 0.0
        rows.append(
            {
                PROGRAM: name,
                N_GENES: len(genes),
                N_PRESENT: n_present,
                FRACTION: round(n_present / len(genes), 3) if genes else 0.0,
                N_UP: len(program.up),
                N_UP_PRESENT: len(up_present),
                FRACTION_UP: round(fraction_up, 3),
                MISSING: ",".join(g for g in genes if g not in present),
                NO_ORTHOLOG: ",".join(program.no_ortholog),
                TRUSTED: bool(
                    fraction_up >= min_fraction
                    and len(up_present) >= min(min_genes, len(program.up))
                ),
                SOURCE: program.source,
            }
        )
    return pd.DataFrame(rows)
