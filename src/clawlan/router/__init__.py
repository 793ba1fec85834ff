"""Several model servers behind one address: vLLM's router (PyPI ``vllm-router``) fed from mDNS.

``process`` runs the router binary on loopback and speaks its worker-management
API; ``front`` is the address clients use (HTTPS with the router's pinned
identity, an SSE error event when a node dies mid-stream, a body cap);
``browse`` lists the ``_clawlan._tcp`` model servers on the LAN; ``pool`` keeps
the router's worker list equal to the healthy servers found; ``command`` is
``clawlan router``. Nothing here imports the server or the engine: a router box
needs neither a model nor llama.cpp.
"""
