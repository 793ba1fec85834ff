"""The inference engine: our continuous-batching scheduler over llama.cpp.

Modules, each one noun:

- ``request``   what a caller asks for (prompt tokens, sampling) and the events it gets back
- ``sequence``  one request's state inside the engine
- ``kv_cache``  KV cell accounting and the prefix cache (which sequence holds which tokens)
- ``scheduler`` which sequences run each step: admission, chunked prefill, preemption
- ``text``      incremental UTF-8 detokenizing and stop strings
- ``llama``     the llama.cpp model and context through the low-level bindings
- ``runner``    turns a scheduled step into one ``llama_decode`` and samples
- ``engine``    the step loop on its own thread, with ``submit`` / ``cancel`` for asyncio
"""
