"""Task adapters, one module per benchmark. Each module registers its tasks with `evalkit.tasks.register`."""
