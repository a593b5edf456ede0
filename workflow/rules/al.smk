# The active-learning cells: one job per dataset × strategy × seed × noise, after the MLflow
# store exists. Changing a param reruns the cell: a changed experiment key then stops with the
# package's "different configuration" error (use a new study name), a changed runtime flag
# (device, data root, store) resumes the finished cell as a no-op.


localrules:
    init_store,


rule init_store:
    # with the store unreachable this warns once (on the console too) and writes the flag
    # anyway: the cells run, their tables stay the source of truth, and
    # `asknlearn backfill results/<study>` fills the store in later
    output:
        STORE_FLAG,
    log:
        f"{OUT}/logs/init_store.log",
    conda:
        "../envs/asknlearn.yaml"
    params:
        asknlearn=ASKNLEARN,
        uri=TRACKING_URI,
        study=STUDY,
    shell:
        "{params.asknlearn} init-store --tracking-uri {params.uri:q} --experiment {params.study:q} "
        "--study {params.study:q} --if-down warn --out {output:q} 2>&1 | tee {log:q}"


rule al_cell:
    input:
        store_flag,
    output:
        # every table the cell writes and the aggregate reads beside rounds.csv
        rounds=f"{CELL}/rounds.csv",
        queries=f"{CELL}/queries.csv",
        reliability=f"{CELL}/reliability.csv",
    log:
        f"{OUT}/logs/al/{{dataset}}/{{strategy}}/seed{{seed}}/noise{{noise}}.log",
    benchmark:
        f"{OUT}/benchmarks/al/{{dataset}}/{{strategy}}/seed{{seed}}/noise{{noise}}.tsv"
    conda:
        "../envs/asknlearn.yaml"
    threads: AL["threads"]
    resources:
        **al_resources(),
    params:
        cell=lambda wc, output: Path(output.rounds).parent,
        dataset="{dataset}",
        strategy="{strategy}",
        seed="{seed}",
        noise="{noise}",
        study=STUDY,
        experiment=cell_flags,
        runtime=RUNTIME_FLAGS,
        launcher=GPU_SLOT,
        # the whole output to the log, each finished round also to the console (one line)
        tee=TEE,
    shell:
        "{params.launcher} --gpus-per-job {resources.gpu} -- "
        "python -m asknlearn run --study {params.study:q} --dataset {params.dataset} "
        "--strategy {params.strategy} --seed {params.seed} --noise {params.noise} "
        "{params.experiment} {params.runtime} --threads {threads} --out {params.cell:q} "
        "2>&1 | {params.tee} {log:q}"
