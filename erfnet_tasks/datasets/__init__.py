"""Datasets the pipeline measures on: their layout, label table, naming rule and class names."""
