/*
 * RECONSTRUCT: weighted back-projection of an aligned tilt series into full, even and odd tomograms
 * (even/odd tilts for T2T, even/odd frames for F2F).
 */
process RECONSTRUCT {
    tag "${meta.id}"
    label 'process_gpu'
    publishDir "${params.outdir}/reconstruct", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    tuple val(meta), path(tilt_series, stageAs: 'input/*'), path(angles, stageAs: 'input/*')

    output:
    tuple val(meta), path("${meta.id}/full.mrc"), path("${meta.id}/even.mrc"), path("${meta.id}/odd.mrc"), emit: tomograms
    path 'versions.yml', emit: versions

    script:
    def thickness = params.thickness ? "--thickness ${params.thickness}" : ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    cryorestore reconstruct ${tilt_series} \\
        --angles ${angles} \\
        --out-dir ${meta.id} \\
        --split ${params.split} \\
        ${thickness} \\
        --device ${params.device}

    cryorestore-versions "${task.process}" torch > versions.yml
    """

    stub:
    """
    mkdir -p ${meta.id}
    touch ${meta.id}/full.mrc ${meta.id}/even.mrc ${meta.id}/odd.mrc

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
