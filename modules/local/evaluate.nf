/*
 * EVALUATE: what the restoration did to one tomogram: SNR, FSC and missing-wedge measures of the raw
 * and restored maps, against the ground truth when there is one; subtomogram averaging at the given
 * particle poses with the template; membrane Dice with a membrane mask; template matching when
 * params.match_step is set. Optional inputs arrive as []. Writes metrics.json, curves.json, figures/.
 */
process EVALUATE {
    tag "${meta.id}"
    label 'process_gpu'
    publishDir "${params.outdir}/evaluation", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    tuple val(meta), path(raw, stageAs: 'raw/*'), path(restored), path(truth, stageAs: 'truth/*'), path(particles, stageAs: 'particles/*'), path(template, stageAs: 'template/*'), path(membranes, stageAs: 'membranes/*')

    output:
    tuple val(meta), path("${meta.id}"), emit: results
    path 'versions.yml', emit: versions

    script:
    def truth_opt = truth ? "--truth ${truth}" : ''
    def particles_opt = particles ? "--particles ${particles}" : ''
    def template_opt = template ? "--template ${template}" : ''
    def membranes_opt = membranes ? "--membranes ${membranes}" : ''
    def match_opt = params.match_step ? "--match-step ${params.match_step}" : ''
    def extra = params.evaluate_args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    mkdir -p ${meta.id}
    cryorestore evaluate \\
        --raw ${raw} \\
        --restored ${restored} \\
        --tilt-range ${params.tilt_min} ${params.tilt_max} \\
        ${truth_opt} ${particles_opt} ${template_opt} ${membranes_opt} ${match_opt} \\
        --seed ${params.seed} \\
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
    mkdir -p ${meta.id}/figures
    touch ${meta.id}/metrics.json ${meta.id}/curves.json ${meta.id}/figures/orthoslices.png

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
