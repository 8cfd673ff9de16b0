/*
 * PREDICT: restore one tomogram with its group's model (tiled, blended inference): the scatter step,
 * one task per tomogram. The result is the mean of the network applied to the even and odd halves.
 */
process PREDICT {
    tag "${meta.id}"
    label 'process_gpu'
    publishDir "${params.outdir}/restored", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    tuple val(meta), path(model), path(even, stageAs: 'even/*'), path(odd, stageAs: 'odd/*')

    output:
    tuple val(meta), path("${meta.id}_restored.mrc"), emit: restored
    path 'versions.yml', emit: versions

    script:
    // a retry after exit 75 (one tile did not fit in GPU memory) halves the tile (from --tile or 96) and the overlap
    def shrink = 1 << (task.attempt - 1)
    def tile = (params.tile || task.attempt > 1) ? "--tile ${Math.max(16, (params.tile ?: 96).intdiv(shrink))}" : ''
    def overlap = params.overlap ? "--overlap ${params.overlap.intdiv(shrink)}" : ''
    def extra = params.predict_args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    cryorestore predict ${model} \\
        --even ${even} \\
        --odd ${odd} \\
        --out ${meta.id}_restored.mrc \\
        ${tile} ${overlap} \\
        --no-progress \\
        --device ${params.device} \\
        ${extra}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: \$(cryorestore --version | sed 's/^cryorestore //')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}_restored.mrc

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
