"""Model files: where they come from, checks before loading, and their metadata.

``store`` resolves the model to a checked GGUF path (assembling the embedded
Gemma 3 270M on first use); ``gguf_file`` reads a GGUF header (the one reader);
``metadata`` turns it into what the planner and chat templates need; ``memory``
is the KV cache arithmetic and the server's default context.
"""
