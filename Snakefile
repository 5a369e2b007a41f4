# texflow: public scRNA-seq of T cells -> Tpex / Tex-term states, IFN-I and LPO along the
# exhaustion trajectory, and between immunotherapy responders and non-responders.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),


include: "workflow/rules/fetch.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/gate.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/states.smk"
include: "workflow/rules/trajectory.smk"
include: "workflow/rules/programs.smk"
include: "workflow/rules/resistance.smk"
include: "workflow/rules/truth.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
