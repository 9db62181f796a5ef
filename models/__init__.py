"""The model registry (registry.toml), shipped inside the package as `blendin_local.models`."""
