// Evaluate pieces of the pipeline with Groovy itself, for tests that run without Nextflow:
//   java -cp language-server-all.jar groovy.ui.GroovyMain render.groovy CASES.json
// CASES.json is a list of {"name", "script", "vars"}: each script (main.nf's helper functions plus a
// call, or a process's script: section) is evaluated with vars bound as variables (params, meta,
// task, inputs). Prints a JSON list of {"name", "value"} or {"name", "error"}.
import groovy.json.JsonOutput
import groovy.json.JsonSlurper

def cases = new JsonSlurper().parse(new File(args[0]))
def results = cases.collect { c ->
    try {
        def value = new GroovyShell(new Binding(c.vars)).evaluate(c.script)
        [name: c.name, value: value instanceof GString ? value.toString() : value]
    } catch (Throwable e) {
        [name: c.name, error: e.toString()]
    }
}
println JsonOutput.toJson(results)
