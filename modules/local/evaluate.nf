/*
 * EVALUATE: what the restoration did to one tomogram: SNR, FSC and missing-wedge measures of the raw
 * and restored maps, against the ground truth when there is one; subtomogram averaging at the given
 * particle poses with the template; membrane Dice with a membrane mask; template matching when
 * params.match_step is set. Optional inputs arrive as []. The raw map is the full tomogram, or two
 * halves that bin/cryorestore-raw-map averages first. The tilt range is the row's (meta.tilt_min/max).
 * With half maps (halves: [even, odd], else []) and the group's model, the truth-free score on the slab
 * training held out (score.json, score_curves.json, score.png; tf_* metrics): on real data the only
 * figures that say whether the restoration beat a Gaussian and the Wiener filter.
 * Writes metrics.json, curves.json, figures/.
 */
process EVALUATE {
    tag "${meta.id}"
    label 'process_gpu'
    publishDir "${params.outdir}/evaluation", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    tuple val(meta), path(raw, stageAs: 'raw*/*'), path(restored), path(truth, stageAs: 'truth/*'), path(particles, stageAs: 'particles/*'), path(template, stageAs: 'template/*'), path(membranes, stageAs: 'membranes/*'), path(halves, stageAs: 'halves*/*'), path(model, stageAs: 'trained/*')

    output:
    tuple val(meta), path("${meta.id}"), emit: results
    path 'versions.yml', emit: versions

    script:
    def raw_list = raw instanceof List ? raw : [raw]
    def raw_map = raw_list.size() == 2 ? 'raw_mean.mrc' : raw_list[0]
    def raw_mean = raw_list.size() == 2 ? "cryorestore-raw-map ${raw_list[0]} ${raw_list[1]} ${raw_map}" : ''
    def truth_opt = truth ? "--truth ${truth}" : ''
    def particles_opt = particles ? "--particles ${particles}" : ''
    def template_opt = template ? "--template ${template}" : ''
    def membranes_opt = membranes ? "--membranes ${membranes}" : ''
    def match_opt = params.match_step ? "--match-step ${params.match_step}" : ''
    def half_list = halves instanceof List ? halves : [halves]
    def truthfree_opt = (half_list.size() == 2 && model) ? "--even ${half_list[0]} --odd ${half_list[1]} --model ${model}" : ''
    def extra = params.evaluate_args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    mkdir -p ${meta.id}
    ${raw_mean}
    cryorestore evaluate \\
        --raw ${raw_map} \\
        --restored ${restored} \\
        --tilt-range ${meta.tilt_min} ${meta.tilt_max} \\
        ${truth_opt} ${particles_opt} ${template_opt} ${membranes_opt} ${match_opt} \\
        ${truthfree_opt} \\
        --seed ${params.seed} \\
        --device ${params.device} \\
        ${extra} \\
        --out ${meta.id}/metrics.json

    cryorestore-versions "${task.process}" torch > versions.yml
    """

    stub:
    """
    mkdir -p ${meta.id}
    mkdir -p ${meta.id}/figures
    touch ${meta.id}/metrics.json ${meta.id}/curves.json ${meta.id}/figures/orthoslices.png
    ${(halves instanceof List ? halves : [halves]).size() == 2 ? "touch ${meta.id}/score.json ${meta.id}/score_curves.json ${meta.id}/score.png" : ''}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
