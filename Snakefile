# texflow: public scRNA-seq of T cells -> Tpex / Tex-term states, IFN-I and LPO along the
# exhaustion trajectory, and between immunotherapy responders and non-responders.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/ingest.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
