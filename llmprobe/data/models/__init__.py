"""The model catalog: one JSON per name, its Hugging Face config.json and where it came from."""
