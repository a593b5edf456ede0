# asknlearn: every figure of the Ask-n-Learn paper from one command.
#   snakemake --cores 2                                     # the offline quickstart (config/config.yaml)
#   snakemake --cores 8 --configfile config/paper/fig2_mnist.yaml
# Rules live in workflow/rules/, their logic in the asknlearn package; see docs/workflow.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/al.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/tracking.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
        TRACKING_OUTPUTS,


onsuccess:
    # where the outputs are and the commands that open them, once the run has ended well
    from snakemake.logging import logger

    from asknlearn.console import where_lines

    for line in where_lines(OUT, TRACKING_URI, [str(c) for c in workflow.overwrite_configfiles]):
        logger.info(line)
