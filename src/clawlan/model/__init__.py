"""Model files: where they come from, checks before loading, and their metadata.

``store`` resolves the model to a checked GGUF path (assembling the embedded
Gemma 3 270M on first use); ``metadata`` reads what the planner and chat
templates need from the GGUF header.
"""
