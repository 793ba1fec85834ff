"""Several model servers behind one address: vLLM's router (PyPI ``vllm-router``) fed from mDNS.

``process`` runs the router binary and speaks its worker-management API;
``browse`` lists the ``_clawlan._tcp`` model servers on the LAN; ``pool`` keeps
the router's worker list equal to the healthy servers found; ``command`` is
``clawlan router``. Nothing here imports the server or the engine: a router box
needs neither a model nor llama.cpp.
"""
