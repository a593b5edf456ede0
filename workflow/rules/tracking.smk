# MLflow: the study's parent run gets the study's tables, summary and figures once they exist.
# The Snakefile includes this after report.smk and adds TRACKING_OUTPUTS to `rule all`.
# init_store (al.smk) created the parent run the cells nest under; with the store down, both
# rules warn and write their flags, and `asknlearn backfill results/<study>` catches up later.


localrules:
    log_study,


STUDY_LOGGED = f"{OUT}/.mlflow-study-logged"
# the targets `rule all` adds: the log_study flag, when MLflow tracking is on
TRACKING_OUTPUTS = [STUDY_LOGGED] if TRACKING_URI else []


rule log_study:
    input:
        store_flag,
        final_outputs(),
    output:
        STUDY_LOGGED,
    log:
        f"{OUT}/logs/log_study.log",
    conda:
        "../envs/asknlearn.yaml"
    params:
        asknlearn=ASKNLEARN,
        uri=TRACKING_URI,
        study=STUDY,
        study_dir=lambda wc, output: Path(output[0]).parent,
    shell:
        "{params.asknlearn} log-study {params.study_dir:q} --tracking-uri {params.uri:q} "
        "--experiment {params.study:q} --study {params.study:q} --if-down warn --out {output:q} "
        "2>&1 | tee {log:q}"
