/*
 * EVALUATE: what the restoration did to one tomogram: SNR, FSC and missing-wedge measures of the raw
 * and restored maps, against the ground truth when there is one, and template matching when a
 * template (and optionally true particle positions) is given. Optional inputs arrive as [].
 */
process EVALUATE {
    tag "${meta.id}"
    label 'process_gpu'
    publishDir "${params.outdir}/evaluation", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    tuple val(meta), path(raw, stageAs: 'raw/*'), path(restored), path(truth, stageAs: 'truth/*'), path(particles, stageAs: 'particles/*'), path(template, stageAs: 'template/*')

    output:
    tuple val(meta), path("${meta.id}"), emit: results
    path 'versions.yml', emit: versions

    script:
    def truth_opt = truth ? "--truth ${truth}" : ''
    def particles_opt = particles ? "--particles ${particles}" : ''
    def template_opt = template ? "--template ${template}" : ''
    def extra = params.evaluate_args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    mkdir -p ${meta.id}
    cryorestore evaluate \\
        --raw ${raw} \\
        --restored ${restored} \\
        ${truth_opt} ${particles_opt} ${template_opt} \\
        --device ${params.device} \\
        ${extra} \\
        --out ${meta.id}/metrics.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: \$(cryorestore --version | sed 's/^cryorestore //')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p ${meta.id}
    touch ${meta.id}/metrics.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
