"""HTTP routes, one module per dialect: ``native`` (jobs, images, models, health), ``a1111``, ``openai``."""
