/*
 * PREDICT: restore one tomogram with its group's model (tiled, blended inference): the scatter step,
 * one task per tomogram. The result is the mean of the network applied to the even and odd halves, or
 * the network applied to the single map (odd arrives as []). The inputs may be MRC files or OME-Zarr
 * stores (staged folders); the output is <id>_restored.mrc, or an OME-Zarr pyramid <id>_restored.zarr
 * with params.output_format = 'zarr'. Beside it, <id>_restored.provenance.json
 * records the source (meta.source: portal dataset, run, tomogram ids; the input files), the model and
 * the command. With halves it also writes <id>_restored_uncertainty.mrc (predict --uncertainty: the local
 * standard deviation of the restored map from the halves' noise).
 */
process PREDICT {
    tag "${meta.id}"
    label 'process_gpu'
    publishDir "${params.outdir}/restored", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    tuple val(meta), path(model), path(even, stageAs: 'even/*'), path(odd, stageAs: 'odd/*')

    output:
    tuple val(meta), path("${meta.id}_restored.${params.output_format}"), emit: restored
    tuple val(meta), path("${meta.id}_restored.provenance.json"), emit: provenance
    tuple val(meta), path("${meta.id}_restored_uncertainty.mrc"), optional: true, emit: uncertainty
    path 'versions.yml', emit: versions

    script:
    // a retry after exit 75 (one tile did not fit in GPU memory) halves the tile (from --tile or 96) and the overlap
    def shrink = 1 << (task.attempt - 1)
    def tile = (params.tile || task.attempt > 1) ? "--tile ${Math.max(16, (params.tile ?: 96).intdiv(shrink))}" : ''
    def overlap = params.overlap ? "--overlap ${params.overlap.intdiv(shrink)}" : ''
    def odd_opt = odd ? "--odd ${odd} --uncertainty" : ''
    def source = ([id: meta.id] + (meta.source ?: [:])).collect { key, value -> "--source '${key}=${value}'" }.join(' ')
    def extra = params.predict_args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    cryorestore predict ${model} \\
        --even ${even} \\
        ${odd_opt} \\
        --out ${meta.id}_restored.${params.output_format} \\
        ${source} \\
        ${tile} ${overlap} \\
        --no-progress \\
        --device ${params.device} \\
        ${extra}

    cryorestore-versions "${task.process}" torch > versions.yml
    """

    stub:
    def make_out = params.output_format == 'zarr' ? 'mkdir -p' : 'touch'
    """
    ${make_out} ${meta.id}_restored.${params.output_format}
    touch ${meta.id}_restored.provenance.json
    ${odd ? "touch ${meta.id}_restored_uncertainty.mrc" : ''}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
