/*
 * TRAIN: one restoration network per training group (one tomogram, or several that share a model),
 * from independent even/odd half sets (params.method) or, for single-map groups (meta.mode 'single':
 * no odd maps), from the full maps alone (params.single_method, IsoNet-style wedge filling with its
 * noise schedule). The tilt range is the group's (meta.tilt_min/tilt_max). Maps are staged in numbered
 * folders so that files with the same name (portal runs often have them) do not collide.
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
    def single = meta.mode == 'single'
    def pairs = single
        ? even_list.collect { map -> "--even ${map}" }.join(' ')
        : [even_list, odd_list].transpose().collect { pair -> "--even ${pair[0]} --odd ${pair[1]}" }.join(' ')
    def method = single ? params.single_method : params.method
    def loss = single ? params.single_loss : params.loss
    def noise = single && params.single_noise_schedule ? "--noise-schedule ${params.single_noise_schedule}" : ''
    def extra = params.train_args ?: ''
    // options set in the params override the preset's; unset (null) ones are left to it
    def overrides = [
        params.epochs != null ? "--epochs ${params.epochs}" : '',
        params.batch_size != null ? "--batch-size ${params.batch_size}" : '',
        params.subtomo_size != null ? "--subtomo-size ${params.subtomo_size}" : '',
        params.n_subtomos != null ? "--n-subtomos ${params.n_subtomos}" : '',
        params.lr != null ? "--lr ${params.lr}" : '',
    ].join(' ')
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus}
    cryorestore train ${pairs} \\
        --method ${method} \\
        --model ${params.model} \\
        --loss ${loss} \\
        --tilt-range ${meta.tilt_min} ${meta.tilt_max} \\
        ${noise} \\
        --preset ${params.preset} \\
        ${overrides} \\
        --seed ${params.seed} \\
        --no-progress \\
        --device ${params.device} \\
        --devices ${params.train_gpus} \\
        ${extra} \\
        --out ${meta.id}

    cryorestore-versions "${task.process}" torch > versions.yml
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
