"""The paper's experiments run locally: datasets, prompts, offline scoring, runs and reports."""
