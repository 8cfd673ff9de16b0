/*
 * REPORT: gather every tomogram's evaluation into one HTML report (orthoslices, Fourier slices,
 * FSC plots, metric tables).
 */
process REPORT {
    label 'process_single'
    publishDir "${params.outdir}/report", mode: params.publish_dir_mode, saveAs: { fn -> fn == 'versions.yml' ? null : fn }

    input:
    path run_dirs, stageAs: 'runs/*'

    output:
    path 'report.html', emit: html
    path 'versions.yml', emit: versions

    script:
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    cryorestore report ${run_dirs} --out report.html

    cryorestore-versions "${task.process}" > versions.yml
    """

    stub:
    """
    touch report.html

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        cryorestore: stub
    END_VERSIONS
    """
}
