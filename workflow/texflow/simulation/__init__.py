"""Simulated data with known truth: test, validation and benchmark tooling, not a workflow stage.

No stage imports this package except `texflow.truth` (which compares a simulated dataset's
planted truth with a run's answer, for simulated datasets only). The command line
``texflow-simulate`` (`dataset.main`) writes the bundled simulated demo dataset.

Modules, by concern:

- `populations`: the simulated cell populations, their default shares and presets
  (`RARE_TPEX`), and where the exhausted states sit on the true pseudotime;
- `genes`: the simulated genes and their expected UMIs per population;
- `counts`: the gamma-Poisson count sampler;
- `dataset`: `simulate` (one dataset with its truth in ``obs``, ``var`` and ``uns``) and the
  command line;
- `cohorts`: `simulate_cohorts`, several cohorts with planted resistance genes.
"""

from .cohorts import simulate_cohorts
from .dataset import main, simulate
from .populations import (
    CD8_POPULATIONS,
    DEFAULT_POPULATION_FRACTIONS,
    DEFAULT_RISING_PROGRAMS,
    EXHAUSTED_POPULATIONS,
    POPULATIONS,
    PSEUDOTIME_SEGMENTS,
    PSEUDOTIME_TERRITORIES,
    RARE_TPEX,
    RARE_TPEX_FRACTIONS,
    STATE_OF_POPULATION,
)

__all__ = [
    "CD8_POPULATIONS",
    "DEFAULT_POPULATION_FRACTIONS",
    "DEFAULT_RISING_PROGRAMS",
    "EXHAUSTED_POPULATIONS",
    "POPULATIONS",
    "PSEUDOTIME_SEGMENTS",
    "PSEUDOTIME_TERRITORIES",
    "RARE_TPEX",
    "RARE_TPEX_FRACTIONS",
    "STATE_OF_POPULATION",
    "main",
    "simulate",
    "simulate_cohorts",
]
