# Study-level outputs: the tidy table (the contract every plot reads), the figures and the
# summary. Light jobs: they run on the machine that runs snakemake, also under SLURM.

from asknlearn.plots import PlotConfig

# the plot: block as `asknlearn plot` flags; a bad block stops the workflow before any job
PLOT_FLAGS = PlotConfig.from_block(config["plot"]).to_args()


localrules:
    aggregate,
    plot_curves,
    plot_noisy_oracle,
    plot_reliability,
    summarize,


rule aggregate:
    input:
        all_cells,
    output:
        rounds=report(
            f"{OUT}/rounds.csv",
            caption="../report/rounds.rst",
            category="Tables",
            labels={"table": "rounds (tidy, one row per cell and round)"},
        ),
        reliability=f"{OUT}/reliability.csv",
    log:
        f"{OUT}/logs/aggregate.log",
    conda:
        "../envs/asknlearn.yaml"
    resources:
        mem_mb=REPORT_RES["mem_mb"],
        runtime=REPORT_RES["runtime"],
    params:
        asknlearn=ASKNLEARN,
    shell:
        "{params.asknlearn} aggregate {input:q} --out {output.rounds:q} "
        "--reliability-out {output.reliability:q} > {log:q} 2>&1"


rule plot_curves:
    input:
        rounds=f"{OUT}/rounds.csv",
    output:
        png=report(
            f"{OUT}/figures/{{dataset}}_noise{{noise}}.png",
            caption="../report/curves.rst",
            category="Learning curves",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "oracle noise": "{noise}",
                "figure": "curves",
            },
        ),
        pdf=f"{OUT}/figures/{{dataset}}_noise{{noise}}.pdf",
    log:
        f"{OUT}/logs/plot_curves/{{dataset}}_noise{{noise}}.log",
    conda:
        "../envs/asknlearn.yaml"
    resources:
        mem_mb=REPORT_RES["mem_mb"],
        runtime=REPORT_RES["runtime"],
    params:
        asknlearn=ASKNLEARN,
        dataset="{dataset}",
        noise="{noise}",
        look=PLOT_FLAGS,
    shell:
        "{params.asknlearn} plot curves --rounds {input.rounds:q} --dataset {params.dataset} "
        "--noise {params.noise} {params.look} --out {output.png:q} --out {output.pdf:q} > {log:q} 2>&1"


rule plot_noisy_oracle:
    input:
        rounds=f"{OUT}/rounds.csv",
    output:
        png=report(
            f"{OUT}/figures/{{dataset}}_noisy_oracle.png",
            caption="../report/noise.rst",
            category="Noisy oracle",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "noisy oracle"},
        ),
        pdf=f"{OUT}/figures/{{dataset}}_noisy_oracle.pdf",
    log:
        f"{OUT}/logs/plot_noisy_oracle/{{dataset}}.log",
    conda:
        "../envs/asknlearn.yaml"
    resources:
        mem_mb=REPORT_RES["mem_mb"],
        runtime=REPORT_RES["runtime"],
    params:
        asknlearn=ASKNLEARN,
        dataset="{dataset}",
        look=PLOT_FLAGS,
    shell:
        "{params.asknlearn} plot noise --rounds {input.rounds:q} --dataset {params.dataset} "
        "{params.look} --out {output.png:q} --out {output.pdf:q} > {log:q} 2>&1"


rule plot_reliability:
    input:
        reliability=f"{OUT}/reliability.csv",
    output:
        png=report(
            f"{OUT}/figures/{{dataset}}_reliability_noise{{noise}}.png",
            caption="../report/reliability.rst",
            category="Reliability",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "oracle noise": "{noise}",
                "figure": "reliability",
            },
        ),
        pdf=f"{OUT}/figures/{{dataset}}_reliability_noise{{noise}}.pdf",
    log:
        f"{OUT}/logs/plot_reliability/{{dataset}}_noise{{noise}}.log",
    conda:
        "../envs/asknlearn.yaml"
    resources:
        mem_mb=REPORT_RES["mem_mb"],
        runtime=REPORT_RES["runtime"],
    params:
        asknlearn=ASKNLEARN,
        dataset="{dataset}",
        noise="{noise}",
        look=PLOT_FLAGS,
    shell:
        "{params.asknlearn} plot reliability --reliability {input.reliability:q} "
        "--dataset {params.dataset} --noise {params.noise} {params.look} "
        "--out {output.png:q} --out {output.pdf:q} > {log:q} 2>&1"


rule summarize:
    input:
        rounds=f"{OUT}/rounds.csv",
    output:
        csv=report(
            f"{OUT}/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary per strategy"},
        ),
        md=f"{OUT}/summary.md",
    log:
        f"{OUT}/logs/summarize.log",
    conda:
        "../envs/asknlearn.yaml"
    resources:
        mem_mb=REPORT_RES["mem_mb"],
        runtime=REPORT_RES["runtime"],
    params:
        asknlearn=ASKNLEARN,
        target=config["summary"]["target_accuracy"],
        references=",".join(config["summary"]["references"]),
        at_labels=",".join(map(str, config["summary"]["at_labels"])),
    shell:
        "{params.asknlearn} summarize --rounds {input.rounds:q} --target-accuracy {params.target} "
        "--references {params.references:q} --at-labels={params.at_labels:q} "
        "--out {output.csv:q} --markdown {output.md:q} > {log:q} 2>&1"


if STUDY == "quickstart" and DATASETS == ["digits"]:

    localrules:
        readme_assets,

    rule readme_assets:
        # the README's figure, with the metrics and checksum the README tests hold it to:
        # `snakemake --cores 2 -f readme_assets` after the quickstart's numbers changed
        input:
            png=f"{OUT}/figures/digits_noise0.png",
            rounds=f"{OUT}/rounds.csv",
        output:
            "docs/img/quickstart.png",
            "tests/data/quickstart_rounds.csv",
            "tests/data/quickstart_figure.sha256",
        log:
            f"{OUT}/logs/readme_assets.log",
        conda:
            "../envs/asknlearn.yaml"
        params:
            python=f"{_PYPATH} python",
        shell:
            "{params.python} -m asknlearn.readme_assets \"$(dirname {input.rounds:q})\" > {log:q} 2>&1"
