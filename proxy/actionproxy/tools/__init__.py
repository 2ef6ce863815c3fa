"""Build and deploy tools (bake, build, ksvc, the Tekton client): the `tools` extra, never
installed in the runtime images. `actionproxy serve` imports nothing from here."""
