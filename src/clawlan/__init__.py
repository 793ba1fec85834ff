"""clawlan: an office's own AI on its own LAN.

One shared model server (``clawlan serve``) runs a large language model with a
continuous-batching engine on llama.cpp; light Clawdbot front ends
(``clawlan front``) find it by mDNS and talk to it over the OpenAI API.
"""

__version__ = "0.1.0"
