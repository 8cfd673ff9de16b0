/*
 * TRAIN: one restoration network per training group (one tomogram, or several that share a model),
 * from independent even/odd half sets. Half tomograms are staged in numbered folders so that files
 * with the same name (portal runs often have them) do not collide.
 */
process TRAIN {
    tag "${meta.id}"
    label 'process_gpu'
    publishDir "${params.outdir}/models", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    tuple val(meta), path(evens, stageAs: 'even*/*'), path(odds, stageAs: 'odd*/*')

    output:
    tuple val(meta), path("${meta.id}"), emit: model
    path 'versions.yml', emit: versions

    script:
    def even_list = evens instanceof List ? evens : [evens]
    def odd_list = odds instanceof List ? odds : [odds]
    def pairs = [even_list, odd_list].transpose().collect { pair -> "--even ${pair[0]} --odd ${pair[1]}" }.join(' ')
    def extra = params.train_args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    cryorestore train ${pairs} \\
        --method ${params.method} \\
        --model ${params.model} \\
        --loss ${params.loss} \\
        --tilt-range ${params.tilt_min} ${params.tilt_max} \\
        --epochs ${params.epochs} \\
        --batch-size ${params.batch_size} \\
        --subtomo-size ${params.subtomo_size} \\
        --n-subtomos ${params.n_subtomos} \\
        --lr ${params.lr} \\
        --seed ${params.seed} \\
        --no-progress \\
        --device ${params.device} \\
        --devices ${params.train_gpus} \\
        ${extra} \\
        --out ${meta.id}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: \$(cryorestore --version | sed 's/^cryorestore //')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p ${meta.id}
    touch ${meta.id}/config.json ${meta.id}/weights.pt

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
