"""`actionproxy build` on a cluster: submit the `actionproxy-function` Tekton PipelineRun and follow it.

`pipelinerun` builds the manifest (no Kubernetes client needed, `--dry-run` uses only it);
`client` talks to the API server with the plain `kubernetes` package (the `tools` extra),
imported only when a cluster build runs, so `actionproxy serve` start-up is unaffected.
"""
