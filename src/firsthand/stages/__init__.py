"""The stages, named after the CLI verbs: collect, branch, build, train, evaluate, report.

A stage imports the shared machinery below it (artifacts, registry, inference, models, ...) and never
another stage; `firsthand.pipeline` runs them in order."""
