/*
 * SIMULATE: a synthetic tomogram with known truth (particles, vesicles, gold) for the test profile:
 * full/even/odd reconstructions, the ground truth, the particle list and the template.
 */
process SIMULATE {
    tag "${meta.id}"
    label 'process_low'
    publishDir "${params.outdir}/simulate", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    val meta

    output:
    tuple val(meta), path("${meta.id}/full.mrc"), path("${meta.id}/even.mrc"), path("${meta.id}/odd.mrc"), emit: tomograms
    tuple val(meta), path("${meta.id}/ground_truth.mrc"), path("${meta.id}/particles.star"), path("${meta.id}/template.mrc"), emit: truth
    tuple val(meta), path("${meta.id}/tilts.tlt"), path("${meta.id}/membranes.mrc"), emit: extras
    path 'versions.yml', emit: versions

    script:
    def shape = "${params.sim_shape}".tokenize(',').join(' ')
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    cryorestore simulate ${meta.id} \\
        --shape ${shape} \\
        --voxel-size ${params.sim_voxel_size} \\
        --tilt-range ${params.tilt_min} ${params.tilt_max} \\
        --tilt-step ${params.sim_tilt_step} \\
        --split ${params.split} \\
        --seed ${meta.seed} \\
        --device cpu

    cryorestore-versions "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p ${meta.id}
    touch ${meta.id}/full.mrc ${meta.id}/even.mrc ${meta.id}/odd.mrc
    touch ${meta.id}/ground_truth.mrc ${meta.id}/particles.star ${meta.id}/template.mrc
    touch ${meta.id}/tilts.tlt ${meta.id}/membranes.mrc

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
