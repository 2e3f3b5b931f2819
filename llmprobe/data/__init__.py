"""Package data: the GPU, price and kernel-class catalogs (TOML) and the model configs (models/)."""
