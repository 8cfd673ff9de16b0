/*
 * SAMPLESHEET_CHECK: validate the samplesheet before anything else runs and write the normalised
 * sheet (absolute local paths, group and voxel size filled in) that the workflow reads.
 * Relative paths in the sheet are taken from the launch folder, as Nextflow's file() does. The local
 * files the sheet names arrive as `data` only so that the container sees them (staged inputs are
 * mounted); the check reads them through the paths written in the sheet.
 */
process SAMPLESHEET_CHECK {
    tag "${samplesheet.name}"
    label 'process_single'
    publishDir "${params.outdir}/pipeline_info", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    path samplesheet
    path data, stageAs: 'data*/*'

    output:
    path 'samplesheet.valid.csv', emit: csv
    path 'versions.yml', emit: versions

    script:
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    cryorestore samplesheet check ${samplesheet} \\
        --base-dir ${workflow.launchDir} \\
        --out samplesheet.valid.csv

    cryorestore-versions "${task.process}" > versions.yml
    """

    stub:
    """
    cp ${samplesheet} samplesheet.valid.csv

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
