#!/usr/bin/env nextflow
/*
 * cryorestore: restore noisy cryo-electron tomograms and measure what the restoration kept.
 *
 *   nextflow run main.nf -profile test                                  # simulated data, CPU, minutes
 *   nextflow run main.nf -profile gpu,singularity --input sheet.csv     # a samplesheet on GPU nodes
 *
 * Chain: SAMPLESHEET_CHECK (or SIMULATE) -> RECONSTRUCT (tilt-series rows) -> TRAIN (one model per
 * group) -> PREDICT (one task per tomogram) -> EVALUATE (per tomogram) -> REPORT (gather).
 * Each process calls one `cryorestore` subcommand; all logic lives in the Python package.
 */

include { SAMPLESHEET_CHECK } from './modules/local/samplesheet_check'
include { SIMULATE } from './modules/local/simulate'
include { RECONSTRUCT } from './modules/local/reconstruct'
include { TRAIN } from './modules/local/train'
include { PREDICT } from './modules/local/predict'
include { EVALUATE } from './modules/local/evaluate'
include { REPORT } from './modules/local/report'

/*
 * One normalised samplesheet row (a map of its columns) -> its meta map. meta.group_size lets
 * groupTuple release a group's TRAIN task as soon as all of its tomograms are ready instead of
 * waiting for the whole sheet; meta.mode is the row kind (halves, tilt_series, single); the tilt
 * range is the row's (tilt_min/tilt_max columns) or else --tilt_min/--tilt_max; meta.source holds
 * the CryoET Data Portal ids for the provenance of the restored map.
 */
def rowMeta(row, groupSizes) {
    def group = row.group ?: row.id
    def source = [dataset: row.portal_dataset, run: row.portal_run, tomograms: row.portal_tomograms]
    return [
        id: row.id, group: group, group_size: groupSizes[group], mode: row.mode ?: rowKind(row),
        voxel_size: row.voxel_size ?: null,
        tilt_min: row.tilt_min ?: params.tilt_min, tilt_max: row.tilt_max ?: params.tilt_max,
        source: source.findAll { _key, value -> value },
    ]
}

// The row kind from the filled columns (the normalised sheet names it in `mode`; a stub run's copy does not).
def rowKind(row) {
    return row.tilt_series ? 'tilt_series' : (row.tomogram ? 'single' : 'halves')
}

def sheetMetas(rows) {
    def sizes = rows.countBy { row -> row.group ?: row.id }
    return rows.collect { row -> [rowMeta(row, sizes), row] }
}

def sheetRows(csv) {
    return sheetMetas(csv.splitCsv(header: true))
}

/*
 * The meta map of one TRAIN task from the metas of its group's tomograms: the samplesheet check
 * guarantees one row kind and one tilt range per group. Single-map groups train params.single_method.
 */
def trainMeta(group, metas) {
    def first = metas[0]
    return [
        id: group.toString(), tomograms: metas.size(), mode: first.mode == 'single' ? 'single' : 'pair',
        tilt_min: first.tilt_min, tilt_max: first.tilt_max,
    ]
}

/*
 * EVALUATE's raw map: the full tomogram when there is one (tilt-series rows, `full` column, single
 * maps), else both halves, which the task averages (bin/cryorestore-raw-map), never one half alone.
 */
def rawMaps(full, even, odd) {
    return full ? [full] : (odd ? [even, odd] : [even])
}

/*
 * The local files a raw samplesheet names (relative paths from the launch folder), for staging into
 * SAMPLESHEET_CHECK: staged inputs are mounted into the container, so the check can open them.
 * URLs and missing files are left out (the check reports missing ones).
 */
def localFiles(sheet) {
    def columns = ['even', 'odd', 'tilt_series', 'angles', 'tomogram', 'full', 'particles', 'template']
    return sheet.splitCsv(header: true).collectMany { row ->
        columns
            .collect { col -> row[col]?.trim() }
            .findAll { text -> text && !text.contains('://') }
            .collect { text -> file(text) }
            .findAll { f -> f.exists() }
    }
}

/*
 * A map of a checked sheet as a staged input. OME-Zarr stores are folders: Nextflow stages them from a
 * local path or an s3:// URL (the portal's bucket, read anonymously with -profile portal), but it cannot
 * list an http(s):// folder, so those are refused with the fix.
 */
def mapFile(text) {
    if (text ==~ /(?i)^https?:\/\/.*\.zarr\/?$/) {
        error("${text}: the pipeline stages OME-Zarr stores from s3:// URLs or local folders, not http(s)://; write the sheet with `cryorestore portal sheet --format zarr --url s3` and run with -profile portal")
    }
    return file(text, checkIfExists: true)
}

def optionalFile(text) {
    return text ? mapFile(text) : []
}

workflow {
    main:
    ch_versions = channel.empty()

    if (params.simulate) {
        //
        // Test data: sim_tomograms simulated tomograms in one training group (one shared model).
        //
        ch_sim = channel.of(1..params.sim_tomograms).map { i ->
            [
                id: "sim${i}", group: 'sim', group_size: params.sim_tomograms, seed: params.sim_seed + i - 1,
                mode: 'halves', tilt_min: params.tilt_min, tilt_max: params.tilt_max, source: [simulated: 'cryorestore simulate', seed: params.sim_seed + i - 1],
            ]
        }
        SIMULATE(ch_sim)
        ch_tomograms = SIMULATE.out.tomograms
        ch_references = SIMULATE.out.truth
            .join(SIMULATE.out.extras)
            .map { meta, truth, particles, template, _tilts, membranes -> [meta, truth, particles, template, membranes] }
        ch_versions = ch_versions.mix(SIMULATE.out.versions)
    }
    else {
        if (!params.input) {
            error("Give a samplesheet with --input sheet.csv (columns id,even,odd / id,tilt_series,angles / id,tomogram), or use -profile test")
        }
        //
        // The sheet is validated before anything runs: every later task depends on its checked copy.
        //
        ch_sheet = channel.fromPath(params.input, checkIfExists: true)
        SAMPLESHEET_CHECK(ch_sheet, ch_sheet.map { sheet -> localFiles(sheet) })
        ch_versions = ch_versions.mix(SAMPLESHEET_CHECK.out.versions)
        ch_rows = SAMPLESHEET_CHECK.out.csv.flatMap { csv -> sheetRows(csv) }
        ch_branched = ch_rows.branch { meta, _row ->
            tilt_series: meta.mode == 'tilt_series'
            single: meta.mode == 'single'
            halves: true
        }
        RECONSTRUCT(ch_branched.tilt_series.map { meta, row -> [meta, file(row.tilt_series, checkIfExists: true), file(row.angles, checkIfExists: true)] })
        ch_versions = ch_versions.mix(RECONSTRUCT.out.versions)
        ch_halves = ch_branched.halves.map { meta, row ->
            [meta, optionalFile(row.full), mapFile(row.even), mapFile(row.odd)]
        }
        // A single map is its own raw map and the only input of training and prediction (no odd half).
        ch_single = ch_branched.single.map { meta, row ->
            def tomogram = mapFile(row.tomogram)
            [meta, tomogram, tomogram, []]
        }
        ch_tomograms = ch_halves.mix(ch_single).mix(RECONSTRUCT.out.tomograms)
        ch_references = ch_rows.map { meta, row -> [meta, [], optionalFile(row.particles), optionalFile(row.template), []] }
    }

    //
    // TRAIN: gather each group's half tomograms, or single maps (released as soon as the group is complete).
    //
    ch_train = ch_tomograms
        .map { meta, _full, even, odd -> [groupKey(meta.group, meta.group_size), meta, even, odd] }
        .groupTuple()
        .map { group, metas, evens, odds -> [trainMeta(group, metas), evens, odds.findAll { f -> f != [] }] }
    TRAIN(ch_train)
    ch_versions = ch_versions.mix(TRAIN.out.versions)

    //
    // PREDICT: scatter, one task per tomogram, with its group's model.
    //
    ch_predict = ch_tomograms
        .map { meta, _full, even, odd -> [meta.group, meta, even, odd] }
        .combine(TRAIN.out.model.map { meta, model -> [meta.id, model] }, by: 0)
        .map { _group, meta, even, odd, model -> [meta, model, even, odd] }
    PREDICT(ch_predict)
    ch_versions = ch_versions.mix(PREDICT.out.versions)

    //
    // EVALUATE: the raw map is the full tomogram when there is one, else the mean of the halves.
    //
    // With halves, EVALUATE also gets them and the group's model: the truth-free score on the held-out slab.
    ch_evaluate = ch_tomograms
        .map { meta, full, even, odd -> [meta.id, meta, rawMaps(full, even, odd), odd ? [even, odd] : []] }
        .join(PREDICT.out.restored.map { meta, restored -> [meta.id, restored] })
        .join(ch_references.map { meta, truth, particles, template, membranes -> [meta.id, truth, particles, template, membranes] })
        .join(ch_predict.map { meta, model, _even, _odd -> [meta.id, model] })
        .map { _id, meta, raw, halves, restored, truth, particles, template, membranes, model -> [meta, raw, restored, truth, particles, template, membranes, halves, model] }
    EVALUATE(ch_evaluate)
    ch_versions = ch_versions.mix(EVALUATE.out.versions)

    //
    // REPORT: gather every evaluation.
    //
    REPORT(EVALUATE.out.results.map { _meta, results -> results }.collect())
    ch_versions = ch_versions.mix(REPORT.out.versions)

    ch_versions
        .map { f -> f.text.trim() }
        .unique()
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true, newLine: true)
}
